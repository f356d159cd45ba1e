"""The stacks of a planned fleet: a base stack (network, store, image, alarm topic), one stack
per model (its ECS service and/or SageMaker endpoint and its monitoring), and an optional CI
access stack. Per-model stacks keep each template far below CloudFormation's 500-resource cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import aws_cdk as cdk
from aws_cdk import aws_kms as kms
from constructs import Construct

from model_store.manifest import FleetManifest
from model_store.plan import DeploymentPlan
from model_store.status import TAG_FLEET, TAG_MODEL, TAG_STAGE
from stacks.ci_access import CiAccessConstruct, CiAccessProps
from stacks.compliance import acknowledge, add_compliance_checks
from model_store.store import StoreLocation
from model_store.fleet import load_and_plan
from stacks.config import FleetSettings, store_of
from stacks.edge import WebAclConstruct, WebAclProps
from stacks.gpu_service import GpuServiceConstruct, GpuServiceProps
from stacks.monitoring import AlarmTopicConstruct, AlarmTopicProps, ModelMonitoringConstruct, ModelMonitoringProps
from stacks.network import NetworkConstruct, NetworkProps
from stacks.sagemaker_endpoint import SageMakerEndpointConstruct, SageMakerEndpointProps
from stacks.store import StoreConstruct, StoreProps

REPO_ROOT = Path(__file__).resolve().parent.parent
StackT = TypeVar("StackT", bound=cdk.Stack)
CI_ROLE_ARN_OUTPUT = "CiRoleArn"


class FleetBaseStack(cdk.Stack):
    """What every model shares: VPC, store bucket + key, log bucket, ECR and image, alarm topic."""

    def __init__(self, scope: Construct, id: str, *, store_location: StoreLocation, settings: FleetSettings, **kwargs) -> None:
        super().__init__(scope, id, **kwargs)
        self.store_location = store_location  # literal names: grants and finding ids stay readable
        self.store = StoreConstruct(
            self,
            "Store",
            StoreProps(
                bucket_name=store_location.bucket,
                repo_root=REPO_ROOT,
                prefix=store_location.prefix,
                image_tag=settings.image_tag,
                base_image=settings.vllm_image,
            ),
        )
        self.network = NetworkConstruct(self, "Network", NetworkProps(flow_logs_bucket=self.store.access_logs))
        self.alarms = AlarmTopicConstruct(self, "Alarms", AlarmTopicProps(key=self.store.key, email=settings.alarm_email))


class ModelStack(cdk.Stack):
    """One model: ECS GPU service and/or SageMaker endpoint as its plan targets, plus monitoring."""

    def __init__(self, scope: Construct, id: str, *, plan: DeploymentPlan, base: FleetBaseStack, settings: FleetSettings, **kwargs) -> None:
        super().__init__(scope, id, **kwargs)
        store = base.store
        self.gpu_service = None
        self.web_acl = None
        self.endpoint = None
        if "ecs" in plan.targets:
            self.gpu_service = GpuServiceConstruct(
                self,
                "Ecs",
                GpuServiceProps(
                    plan=plan,
                    vpc=base.network.vpc,
                    store=base.store_location,
                    key=store.key,
                    image=store.image,
                    access_logs=store.access_logs,
                    certificate_arn=settings.certificate_arn,
                    allowed_cidr=settings.allowed_cidr,
                    deletion_protection=settings.deletion_protection,
                ),
            )
            self.web_acl = self._web_acl(plan, store.key, settings)
        if "sagemaker" in plan.targets:
            self.endpoint = SageMakerEndpointConstruct(
                self,
                "SageMaker",
                SageMakerEndpointProps(
                    plan=plan, vpc=base.network.vpc, store=base.store_location, key=store.key, image=store.image
                ),
            )
        self.monitoring = ModelMonitoringConstruct(
            self,
            "Monitoring",
            ModelMonitoringProps(plan=plan, topic=base.alarms.topic, gpu_service=self.gpu_service, endpoint=self.endpoint),
        )

    def _web_acl(self, plan: DeploymentPlan, key: kms.IKey, settings: FleetSettings) -> WebAclConstruct | None:
        """The WAF in front of the public load balancer, unless `-c waf=off` says something else fronts it."""
        if settings.waf:
            return WebAclConstruct(
                self, "Waf", WebAclProps(plan=plan, load_balancer=self.gpu_service.load_balancer, key=key, block=settings.waf_block)
            )
        acknowledge(
            self.gpu_service.load_balancer,
            "NIST.800.53.R5-ALBWAFEnabled",
            "-c waf=off: the operator fronts the load balancer with their own WAF, gateway or CDN",
        )
        cdk.Annotations.of(self.gpu_service.load_balancer).add_warning(
            f"model {plan.model_name}: -c waf=off, so no WAF web ACL (managed rules, per-client rate limit) "
            f"protects the public load balancer; front it with your own."
        )
        return None


class CiAccessStack(cdk.Stack):
    """One stage's CI role: jobs of the repository's GitHub environment (or ref) publish adapters
    of the planned models and promote them on this stage."""

    def __init__(
        self, scope: Construct, id: str, *, base: FleetBaseStack, plans: list[DeploymentPlan], settings: FleetSettings,
        **kwargs,
    ) -> None:  # fmt: skip
        super().__init__(scope, id, **kwargs)
        self.access = CiAccessConstruct(
            self,
            "CiAccess",
            CiAccessProps(
                github_repo=settings.github_repo,
                store=base.store_location,
                key=base.store.key,
                models=tuple(plan.model_name for plan in plans),
                stage=plans[0].stage,
                github_environment=settings.github_environment,
                github_ref=settings.github_ref,
                existing_provider_arn=settings.github_oidc_provider_arn,
            ),
        )
        # The workflow (examples/ci/publish-adapter.yml) assumes the role by this ARN.
        self.role_arn_output = cdk.CfnOutput(
            self,
            CI_ROLE_ARN_OUTPUT,
            value=self.access.role.role_arn,
            description="the CI role to assume: set it as the repository variable LLMFLEET_CI_ROLE_ARN",
        )


def tagged(stack: StackT, tags: dict[str, str]) -> StackT:
    """`stack` with `tags` on itself and written into every taggable resource of its template.

    Stack-level tags alone reach resources only through CloudFormation's propagation at deploy
    time, which is not visible in the template; `llmfleet status --aws` finds a model's ECS
    service, target group and SageMaker endpoint by these tags, so they are set on the resources.
    """
    for key, value in tags.items():
        cdk.Tags.of(stack).add(key, value)
    return stack


@dataclass(frozen=True)
class Fleet:
    """The composed app: what was planned and the stacks made from it (tests and app.py use this)."""

    settings: FleetSettings
    manifest: FleetManifest
    plans: list[DeploymentPlan]
    base: FleetBaseStack
    models: dict[str, ModelStack]
    ci: CiAccessStack | None

    @property
    def stacks(self) -> list[cdk.Stack]:
        return [self.base, *self.models.values(), *([self.ci] if self.ci else [])]


def compose_fleet(app: cdk.App, *, compliance_checks: bool = True) -> Fleet:
    """Read the app's context, plan the manifest it names, add the fleet's stacks and the compliance checks.

    Region comes from the manifest (ALB log delivery needs it); the account stays open, so
    synthesis needs no credentials and does no lookups. Raises an LlmfleetError (ManifestError,
    PlanError, StackConfigError...) with its message. `compliance_checks=False` only for measuring synthesis.
    """
    settings = FleetSettings.from_context(app.node)
    manifest, plans = load_and_plan(settings.fleet_path, settings.stage)
    stage = plans[0].stage
    env = cdk.Environment(region=manifest.region)
    prefix = f"llmfleet-{manifest.name}-{stage}"
    tags = {TAG_FLEET: manifest.name, TAG_STAGE: stage}
    base = tagged(FleetBaseStack(app, prefix, store_location=store_of(plans), settings=settings, env=env), tags)
    models = {
        plan.model_name: tagged(
            ModelStack(app, f"{prefix}-{plan.model_name}", plan=plan, base=base, settings=settings, env=env),
            {**tags, TAG_MODEL: plan.model_name},
        )
        for plan in plans
    }
    ci = None
    if settings.github_repo is not None:
        ci = CiAccessStack(app, f"{prefix}-ci", base=base, plans=plans, settings=settings, env=env)
        tagged(ci, tags)
    else:
        cdk.Annotations.of(base).add_info("no CI access role: set -c github_repo=owner/name to create one")
    if compliance_checks:
        add_compliance_checks(app)
    return Fleet(settings=settings, manifest=manifest, plans=plans, base=base, models=models, ci=ci)
