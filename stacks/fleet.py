"""This repository's CDK app, one user of LlmFleet: the fleet manifest the context names, planned,
in a base stack (network, store, image, alarm topic), one stack per model (its ECS service and/or
SageMaker endpoint and its monitoring) and an optional CI access stack, with cdk-nag on every
stack. Per-model stacks keep each template far below CloudFormation's 500-resource cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import aws_cdk as cdk

from llmfleet.model_store.gateway.consumers import load_consumers
from llmfleet.model_store.planning.fleet import load_and_plan
from llmfleet.model_store.contract.plan import AnyPlan
from llmfleet.model_store.contract.manifest import FleetManifest
from llmfleet.model_store.ops.status import TAG_FLEET, TAG_MODEL, TAG_STAGE
from llmfleet.stacks.compliance import add_compliance_checks
from llmfleet.stacks.config import FleetSettings
from llmfleet.stacks.llm_fleet import FleetGatewayProps, LlmFleet, LlmFleetProps

StackT = TypeVar("StackT", bound=cdk.Stack)
CI_ROLE_ARN_OUTPUT = "CiRoleArn"


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
    """The composed app: what was planned, the LlmFleet construct and the stacks holding it."""

    settings: FleetSettings
    manifest: FleetManifest
    plans: list[AnyPlan]
    construct: LlmFleet
    base: cdk.Stack
    models: dict[str, cdk.Stack]
    ci: cdk.Stack | None
    gateway: cdk.Stack | None = None

    @property
    def stacks(self) -> list[cdk.Stack]:
        optional = [stack for stack in (self.gateway, self.ci) if stack is not None]
        return [self.base, *self.models.values(), *optional]


def fleet_props(settings: FleetSettings, plans: list[AnyPlan], **given) -> LlmFleetProps:
    """The app's context as LlmFleet props: everything created; the image built FROM `vllm_image`,
    or the one CI pushed as `image_tag`."""
    return LlmFleetProps(
        plans=plans,
        image_tag=settings.image_tag,
        base_image=settings.vllm_image,
        alarm_email=settings.alarm_email,
        certificate_arn=settings.certificate_arn,
        allowed_cidr=settings.allowed_cidr,
        waf=settings.waf,
        waf_block=settings.waf_block,
        deletion_protection=settings.deletion_protection,
        **given,
    )


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
    base = tagged(cdk.Stack(app, prefix, env=env), tags)
    models: dict[str, cdk.Stack] = {}

    def model_stack(plan: AnyPlan) -> cdk.Stack:
        stack = cdk.Stack(app, f"{prefix}-{plan.model_name}", env=env)
        models[plan.model_name] = tagged(stack, {**tags, TAG_MODEL: plan.model_name})
        return stack

    gateway = None
    if manifest.gateway.enabled:  # the fleet's one endpoint, in a stack of its own
        gateway_stack = tagged(cdk.Stack(app, f"{prefix}-gateway", env=env), tags)
        consumers = load_consumers(manifest, settings.fleet_path)
        gateway = FleetGatewayProps(
            manifest=manifest,
            consumers=consumers,
            image_uri=settings.gateway_image,
            base_image=None if settings.gateway_image else settings.gateway_base_image,
            scope=gateway_stack,
        )
    # "Default": the fleet's resources are named in the templates as the stacks' own children.
    fleet = LlmFleet(base, "Default", fleet_props(settings, plans, model_scope=model_stack, gateway=gateway))
    ci = None
    if settings.github_repo is not None:
        ci = tagged(cdk.Stack(app, f"{prefix}-ci", env=env), tags)
        access = fleet.add_ci_access(
            settings.github_repo,
            scope=ci,
            github_environment=settings.github_environment,
            github_ref=settings.github_ref,
            existing_provider_arn=settings.github_oidc_provider_arn,
        )
        # The workflow (examples/ci/publish-adapter.yml) assumes the role by this ARN.
        cdk.CfnOutput(
            ci,
            CI_ROLE_ARN_OUTPUT,
            value=access.role.role_arn,
            description="the CI role to assume: set it as the repository variable LLMFLEET_CI_ROLE_ARN",
        )
    else:
        cdk.Annotations.of(base).add_info("no CI access role: set -c github_repo=owner/name to create one")
    if compliance_checks:
        add_compliance_checks(app)
    return Fleet(
        settings=settings,
        manifest=manifest,
        plans=plans,
        construct=fleet,
        base=base,
        models=models,
        ci=ci,
        gateway=gateway.scope if gateway else None,
    )
