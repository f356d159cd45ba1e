"""One model of the fleet: its ECS GPU service (and the WAF in front of it) and/or its SageMaker
endpoint as its plan targets, plus its dashboard and alarms."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from constructs import Construct

from llmfleet.model_store.planning.edge import client_rate_limit
from llmfleet.model_store.contract.plan import AnyPlan
from llmfleet.model_store.store.store import StoreLocation
from llmfleet.stacks.edge import WebAclConstruct, WebAclProps, protect_load_balancer
from llmfleet.stacks.gpu_service import GpuServiceConstruct, GpuServiceProps
from llmfleet.stacks.monitoring import ModelMonitoringConstruct, ModelMonitoringProps
from llmfleet.stacks.sagemaker_endpoint import SageMakerEndpointConstruct, SageMakerEndpointProps
from llmfleet.stacks.store import ServingImage
from llmfleet.model_store.contract.targets import ECS, SAGEMAKER


@dataclass(frozen=True)
class ModelServingProps:
    """plan: the model's serving plan (its targets decide what is built). vpc, store, key, image,
    access_logs, topic: the fleet's network, model store, store KMS key, serving image, log bucket
    and alarm topic. certificate_arn, allowed_cidr, deletion_protection: the load balancer's, as
    GpuServiceProps says (defaults None: plain HTTP, "0.0.0.0/0", True). waf: a WAF web ACL in
    front of the public load balancer (default True; False leaves it to the operator's own WAF,
    gateway or CDN, with a warning). waf_block: the web ACL blocks what its rules match (default
    True; False counts only). internal: the ECS load balancer is internal, reached only from the
    fleet's gateway, and has no WAF of its own (default False: public, as above)."""

    plan: AnyPlan
    vpc: ec2.IVpc
    store: StoreLocation
    key: kms.IKey
    image: ServingImage
    access_logs: s3.IBucket
    topic: sns.ITopic
    certificate_arn: str | None = None
    allowed_cidr: str = "0.0.0.0/0"
    deletion_protection: bool = True
    waf: bool = True
    waf_block: bool = True
    internal: bool = False


class ModelServing(Construct):
    """A model's serving targets and monitoring; attributes gpu_service, web_acl and endpoint are
    None where the plan has no such target."""

    def __init__(self, scope: Construct, id: str, props: ModelServingProps) -> None:
        super().__init__(scope, id)
        plan = props.plan
        self.gpu_service = None
        self.web_acl = None
        self.endpoint = None
        if ECS.name in plan.targets:
            self.gpu_service = GpuServiceConstruct(
                self,
                "Ecs",
                GpuServiceProps(
                    plan=plan,
                    vpc=props.vpc,
                    store=props.store,
                    key=props.key,
                    image=props.image,
                    access_logs=props.access_logs,
                    certificate_arn=props.certificate_arn,
                    allowed_cidr=props.allowed_cidr,
                    deletion_protection=props.deletion_protection,
                    internal=props.internal,
                ),
            )
            if not props.internal:  # the gateway's public load balancer carries the WAF
                self.web_acl = self._web_acl(props)
        if SAGEMAKER.name in plan.targets:
            self.endpoint = SageMakerEndpointConstruct(
                self,
                "SageMaker",
                SageMakerEndpointProps(plan=plan, vpc=props.vpc, store=props.store, key=props.key, image=props.image),
            )
        self.monitoring = ModelMonitoringConstruct(
            self,
            "Monitoring",
            ModelMonitoringProps(plan=plan, topic=props.topic, gpu_service=self.gpu_service, endpoint=self.endpoint),
        )

    def _web_acl(self, props: ModelServingProps) -> WebAclConstruct | None:
        """The WAF in front of the public load balancer, unless `waf=False` says something else fronts it."""
        plan = props.plan
        acl = WebAclProps(
            name=f"llmfleet-{plan.fleet}-{plan.stage}-{plan.model_name}",
            rate_limit=client_rate_limit(plan),
            load_balancer=self.gpu_service.load_balancer,
            key=props.key,
            block=props.waf_block,
        )
        return protect_load_balancer(self, acl, enabled=props.waf, what=f"model {plan.model_name}")
