"""The fleet as one construct a platform team adds to its own stack: LlmFleet.

It composes the kit's constructs (store, network, alarm topic, one ModelServing per model, CI
access on request), using the team's resources where given and creating them where not. It
applies no aspect and no validation plugin to the team's stacks: cdk-nag is theirs to add
(`stacks.compliance.add_compliance_checks`); the fleet's own exceptions are acknowledged on the
fleet's own resources, so the packs pass on it. docs/construct.md lists the props.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from constructs import Construct

from llmfleet.model_store.gateway.consumers import ConsumersFile
from llmfleet.model_store.contract.plan import AnyPlan
from llmfleet.model_store.contract.manifest import FleetManifest
from llmfleet.stacks.ci_access import CiAccessConstruct, CiAccessProps
from llmfleet.stacks.compliance import acknowledge_inline_policies
from llmfleet.stacks.config import StackConfigError, store_of
from llmfleet.stacks.gateway import Gateway, GatewayProps
from llmfleet.stacks.model_serving import ModelServing, ModelServingProps
from llmfleet.stacks.monitoring import AlarmTopicConstruct, AlarmTopicProps
from llmfleet.stacks.network import NetworkConstruct, NetworkProps
from llmfleet.stacks.store import StoreConstruct, StoreProps


@dataclass(frozen=True)
class FleetGatewayProps:
    """manifest: the fleet manifest the plans were made from, its `gateway` section enabled (fallbacks,
    prices). consumers: its consumers file (`model_store.gateway.consumers.load_consumers(manifest, path)`; default:
    none, every key refused until the file lists consumers). image_uri: the gateway image in ECR (default
    None: built from containers/gateway/Dockerfile beside this package). base_image: the Python image that
    build starts FROM, pinned by digest (default None; required without image_uri). scope: where the gateway's parts go,
    e.g. a stack of its own (default None: under the fleet construct, id "Gateway")."""

    manifest: FleetManifest
    consumers: ConsumersFile = field(default_factory=ConsumersFile)
    image_uri: str | None = None
    base_image: str | None = None
    scope: Construct | None = None


@dataclass(frozen=True)
class LlmFleetProps:
    """plans: the fleet's serving plans, `model_store.planning.fleet.load_and_plan(path)[1]` (required; one
    stage, one store). vpc: the network the servers run in; it needs private subnets with egress
    (PRIVATE_WITH_EGRESS) in at least two AZs, public subnets for the load balancers, and reach to
    S3, ECR, CloudWatch Logs and Secrets Manager (default None: a new VPC over two AZs with one
    NAT gateway, those endpoints and flow logs). store_bucket: the manifest's store bucket, named
    as the manifest's `store` (default None: a new versioned, KMS-encrypted bucket of that name).
    key: the KMS key of the store, logs, alarm topic and repository (default None: the store
    bucket's own key when it has one, else a new key). alarm_topic: the topic every alarm notifies
    (default None: a new encrypted topic). log_bucket: an SSE-S3 bucket for load-balancer, flow and
    S3 access logs (default None: a new one). image_uri: the serving image in ECR,
    `<account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag>` or `@sha256:<digest>` (default
    None: built, see base_image). image_tag: a tag already pushed to the fleet's own repository
    (default None). base_image: the vLLM image the serving image is built FROM, pinned by digest,
    from containers/vllm/Dockerfile beside this package (default None; required when neither
    image_uri nor image_tag is given). alarm_email: an address subscribed to the created alarm
    topic (default None: no subscription). certificate_arn: an ACM certificate for HTTPS (default
    None: plain HTTP, with a warning). allowed_cidr: who may reach the load balancers (default
    "0.0.0.0/0"; the API key still guards /v1). waf: a WAF web ACL per public load balancer
    (default True). waf_block: the web ACLs block rather than count (default True).
    deletion_protection: load balancers refuse deletion (default True). model_scope: where each
    model's parts go, given its plan: e.g. a stack per model, to stay under CloudFormation's 500
    resources per stack (default None: under this construct, with the model's name as id). gateway: the
    fleet's one endpoint (FleetGatewayProps; default None: each ECS model has its own public load balancer,
    WAF and key, as before); with it, the models' load balancers are internal and only the gateway reaches them."""

    plans: Sequence[AnyPlan]
    vpc: ec2.IVpc | None = None
    store_bucket: s3.IBucket | None = None
    key: kms.IKey | None = None
    alarm_topic: sns.ITopic | None = None
    log_bucket: s3.IBucket | None = None
    image_uri: str | None = None
    image_tag: str | None = None
    base_image: str | None = None
    alarm_email: str | None = None
    certificate_arn: str | None = None
    allowed_cidr: str = "0.0.0.0/0"
    waf: bool = True
    waf_block: bool = True
    deletion_protection: bool = True
    model_scope: Callable[[AnyPlan], Construct] | None = None
    gateway: FleetGatewayProps | None = None

    def __post_init__(self) -> None:
        if not self.plans:
            raise StackConfigError(
                "LlmFleetProps.plans: no plans; plan a fleet manifest with model_store.planning.fleet.load_and_plan"
            )
        stages = sorted({plan.stage for plan in self.plans})
        if len(stages) != 1:
            raise StackConfigError(f"LlmFleetProps.plans: stages {stages}; a fleet deploys one stage")
        if self.alarm_topic is not None and self.alarm_email is not None:
            raise StackConfigError(
                f"LlmFleetProps.alarm_email {self.alarm_email!r}: it subscribes the topic the fleet creates, but "
                f"alarm_topic was given; subscribe the address to your topic instead"
            )
        try:
            self.store_props()  # checks the bucket, key and image now, not halfway through the construct
        except StackConfigError as exc:
            raise StackConfigError(f"LlmFleetProps: {exc}") from None  # StoreProps.bucket is store_bucket here

    def store_props(self) -> StoreProps:
        store = store_of(list(self.plans))
        return StoreProps(
            bucket_name=store.bucket,
            prefix=store.prefix,
            key=self.key,
            bucket=self.store_bucket,
            access_logs=self.log_bucket,
            image_uri=self.image_uri,
            image_tag=self.image_tag,
            base_image=self.base_image,
        )


class LlmFleet(Construct):
    """Every model of a planned fleet, served on its targets and monitored, with what they share.

    Attributes: store (key, buckets, repository, image), network (None when vpc was given), vpc,
    alarm_topic, models (model name -> ModelServing), gateway (None without one), plans, store_location.

    Under the id "Default", the construct adds no segment to its resources' logical ids: the
    resources keep the ids they would have as the scope's own children (this repository's app
    uses that to keep its stacks' templates as they were before the construct existed)."""

    def __init__(self, scope: Construct, id: str, props: LlmFleetProps) -> None:
        super().__init__(scope, id)
        self.plans = list(props.plans)
        self.store_location = store_of(self.plans)
        # Key, log bucket, store bucket, repository and image: the given ones, the rest created.
        self.store = StoreConstruct(self, "Store", props.store_props())
        # The servers' network: the given VPC, else one with private subnets, endpoints and flow logs.
        self.network = None
        if props.vpc is None:
            self.network = NetworkConstruct(self, "Network", NetworkProps(flow_logs_bucket=self.store.access_logs))
        self.vpc = props.vpc or self.network.vpc
        # Where alarms go: the given topic, else an encrypted one.
        self.alarm_topic = props.alarm_topic
        if props.alarm_topic is None:
            alarms = AlarmTopicConstruct(self, "Alarms", AlarmTopicProps(key=self.store.key, email=props.alarm_email))
            self.alarm_topic = alarms.topic
        # One model's servers, load balancer or endpoint, WAF, dashboard and alarms per plan.
        self.models = {plan.model_name: self._model(plan, props) for plan in self.plans}
        # The one public endpoint in front of the (then internal) model load balancers, when asked for.
        self.gateway = None if props.gateway is None else self._gateway(props)
        for part in (self, *self.models.values(), *([self.gateway] if self.gateway else [])):
            acknowledge_inline_policies(part)

    def _model(self, plan: AnyPlan, props: LlmFleetProps) -> ModelServing:
        serving = ModelServingProps(
            plan=plan,
            vpc=self.vpc,
            store=self.store_location,
            key=self.store.key,
            image=self.store.image,
            access_logs=self.store.access_logs,
            topic=self.alarm_topic,
            certificate_arn=props.certificate_arn,
            allowed_cidr=props.allowed_cidr,
            deletion_protection=props.deletion_protection,
            waf=props.waf,
            waf_block=props.waf_block,
            internal=props.gateway is not None,
        )
        if props.model_scope is None:
            return ModelServing(self, plan.model_name, serving)
        return ModelServing(props.model_scope(plan), "Default", serving)  # the scope's ids, as above

    def _gateway(self, props: LlmFleetProps) -> Gateway:
        given = props.gateway
        gateway = GatewayProps(
            manifest=given.manifest,
            consumers=given.consumers,
            plans=self.plans,
            models=self.models,
            vpc=self.vpc,
            key=self.store.key,
            access_logs=self.store.access_logs,
            topic=self.alarm_topic,
            image_uri=given.image_uri,
            base_image=given.base_image,
            certificate_arn=props.certificate_arn,
            allowed_cidr=props.allowed_cidr,
            deletion_protection=props.deletion_protection,
            waf=props.waf,
            waf_block=props.waf_block,
        )
        if given.scope is None:
            return Gateway(self, "Gateway", gateway)
        return Gateway(given.scope, "Default", gateway)  # the scope's own ids, as for the models

    def add_ci_access(
        self,
        github_repo: str,
        *,
        scope: Construct | None = None,
        id: str = "CiAccess",
        github_environment: str | None = None,
        github_ref: str | None = None,
        existing_provider_arn: str | None = None,
    ) -> CiAccessConstruct:
        """A role CI jobs of `github_repo` assume (GitHub OIDC) to publish this fleet's adapters and
        promote them on its stage; under `scope` (default: this construct). The keyword arguments
        are CiAccessProps' (stacks/ci_access.py)."""
        access = CiAccessConstruct(
            scope or self,
            id,
            CiAccessProps(
                github_repo=github_repo,
                store=self.store_location,
                key=self.store.key,
                models=tuple(self.models),
                stage=self.plans[0].stage,
                github_environment=github_environment,
                github_ref=github_ref,
                existing_provider_arn=existing_provider_arn,
            ),
        )
        acknowledge_inline_policies(access)
        return access
