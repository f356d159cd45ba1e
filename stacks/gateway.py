"""The fleet's one endpoint: the gateway service behind the public load balancer and its WAF, the
usage database, the rate-limit cache, the consumers' key hashes, and the gateway's alarms and
dashboard. The models' load balancers are internal when it is on (ModelServingProps.internal);
the gateway's security group is the only one that reaches them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from constructs import Construct

from llmfleet.model_store.gateway.consumers import ConsumersFile
from llmfleet.model_store.planning.edge import gateway_client_rate_limit
from llmfleet.model_store.contract.front_door import client_paths
from llmfleet.model_store.gateway.config import gateway_config, GatewayConfig, SageMakerUpstream
from llmfleet.model_store.gateway.contract import (
    GATEWAY_BASE_IMAGE_ARG,
    GATEWAY_DOCKERFILE,
    gateway_keys_secret_name,
    gateway_sizing,
)
from llmfleet.model_store.contract.plan import AnyPlan
from llmfleet.model_store.contract.manifest import FleetManifest
from llmfleet.stacks.compliance import acknowledge
from llmfleet.stacks.config import IMAGE_BY_DIGEST, StackConfigError
from llmfleet.stacks.edge import WebAclProps, protect_load_balancer
from llmfleet.stacks.gateway_cache import GatewayCacheConstruct, GatewayCacheProps
from llmfleet.stacks.gateway_database import GatewayDatabaseConstruct, GatewayDatabaseProps
from llmfleet.stacks.gateway_service import GATEWAY_IMAGE_CONTEXT, GatewayServiceConstruct, GatewayServiceProps
from llmfleet.stacks.model_serving import ModelServing
from llmfleet.stacks.monitoring import GatewayMonitoringConstruct, GatewayMonitoringProps
from llmfleet.stacks.store import (
    IMAGE_SOURCE_ROOT,
    ServingImage,
    ecr_image,
    image_asset,
    parse_ecr_image,
    warn_if_placeholder,
)


@dataclass(frozen=True)
class GatewayProps:
    """manifest: the fleet manifest the plans were made from (its `gateway` section must be enabled;
    fallbacks and prices come from it). consumers: its consumers file (model_store.gateway.consumers:
    load_consumers). plans: the fleet's plans. models: the fleet's ModelServing by model name, their ECS
    load balancers internal. vpc, key, access_logs, topic: the fleet's network, KMS key (log groups),
    log bucket and alarm topic. image_uri: the gateway image in ECR (default None: built from
    containers/gateway/Dockerfile under repo_root, IMAGE_SOURCE_ROOT by default, FROM base_image). base_image:
    the Python image the gateway image is built FROM, pinned by digest, `<repository>:<tag>@sha256:<64 hex>`
    (default None; required when image_uri is not given). certificate_arn,
    allowed_cidr, deletion_protection, waf, waf_block: as for the models' public load balancers (defaults
    None, "0.0.0.0/0", True, True, True); deletion_protection covers the database too."""

    manifest: FleetManifest
    consumers: ConsumersFile
    plans: Sequence[AnyPlan]
    models: Mapping[str, ModelServing]
    vpc: ec2.IVpc
    key: kms.IKey
    access_logs: s3.IBucket
    topic: sns.ITopic
    image_uri: str | None = None
    base_image: str | None = None
    repo_root: Path = IMAGE_SOURCE_ROOT
    certificate_arn: str | None = None
    allowed_cidr: str = "0.0.0.0/0"
    deletion_protection: bool = True
    waf: bool = True
    waf_block: bool = True

    def __post_init__(self) -> None:
        if not self.manifest.gateway.enabled:
            raise StackConfigError(
                f"GatewayProps.manifest: fleet {self.manifest.name!r} has gateway.enabled false; set it true in the "
                f"fleet manifest, or leave the gateway out"
            )
        public = sorted(
            name for name, model in self.models.items() if model.gpu_service and not model.gpu_service.internal
        )
        if public:
            raise StackConfigError(
                f"GatewayProps.models: {public} have public load balancers; behind the gateway they must be internal "
                f"(ModelServingProps.internal=True)"
            )
        if self.image_uri is not None:
            parse_ecr_image(self.image_uri, "GatewayProps.image_uri")
            return
        if not (self.repo_root / GATEWAY_DOCKERFILE).is_file():
            raise StackConfigError(
                f"GatewayProps.repo_root: {self.repo_root} has no {GATEWAY_DOCKERFILE} "
                f"to build the gateway image from; "
                f"give image_uri"
            )
        if self.base_image is None or not re.fullmatch(IMAGE_BY_DIGEST, self.base_image):
            raise StackConfigError(
                f"GatewayProps.base_image: the gateway image is built FROM a Python base pinned by digest, "
                f"<repository>:<tag>@sha256:<64 hex>, but {self.base_image!r} was given "
                f"(-c gateway_base_image=python:3.11-slim@sha256:<digest>, or -c gateway_image=<an ECR image URI>)"
            )


class Gateway(Construct):
    """Attributes: key, keys_secret, database, cache, service, web_acl (None with waf=False),
    monitoring, config (the GatewayConfig passed to the tasks, CDK tokens in its URLs), url."""

    def __init__(self, scope: Construct, id: str, props: GatewayProps) -> None:
        super().__init__(scope, id)
        plans = list(props.plans)
        fleet, stage = props.manifest.name, plans[0].stage
        name = f"llmfleet-{fleet}-{stage}"
        sizing = gateway_sizing(props.consumers.peak_requests_per_second())
        # The gateway's own key: the key hashes, the database and its secret, the cache at rest.
        self.key = kms.Key(
            self,
            "Key",
            enable_key_rotation=True,
            description=f"llmfleet: gateway of {fleet} ({stage}): key hashes, usage database, rate-limit cache",
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        self.keys_secret = self._keys_secret(
            fleet, stage
        )  # {consumer: [sha256, ...]}, written by `llmfleet gateway keys`
        self.database = GatewayDatabaseConstruct(
            self,
            "Database",
            GatewayDatabaseProps(
                cluster_identifier=f"{name}-gateway",
                vpc=props.vpc,
                key=self.key,
                log_key=props.key,
                deletion_protection=props.deletion_protection,
            ),
        )
        self.cache = GatewayCacheConstruct(
            self, "Cache", GatewayCacheProps(vpc=props.vpc, key=self.key, replication_group_id=f"{name}-gw")
        )
        self.config = self._config(props, plans)  # routes to the internal load balancers and SageMaker endpoints
        self.service = GatewayServiceConstruct(
            self,
            "Service",
            GatewayServiceProps(
                what=f"gateway of {fleet} ({stage})",
                vpc=props.vpc,
                key=props.key,
                access_logs=props.access_logs,
                image=self._image(props),
                config_json=self.config.to_json(),
                sizing=sizing,
                keys_secret=self.keys_secret,
                database_secret=self.database.secret,
                redis_url=self.cache.url,
                upstream_keys={m: s.gpu_service.api_key for m, s in props.models.items() if s.gpu_service is not None},
                sagemaker_endpoint_arns=self._endpoint_arns(),
                client_paths=sorted({path for plan in plans for path in client_paths(plan.kind)}),
                certificate_arn=props.certificate_arn,
                allowed_cidr=props.allowed_cidr,
                deletion_protection=props.deletion_protection,
            ),
        )
        # The gateway's tasks reach the model load balancers, the database and the cache; nothing else does.
        for model in props.models.values():
            if model.gpu_service is not None:
                model.gpu_service.allow_from(self.service)
        self.database.allow_from(self.service)
        self.cache.allow_from(self.service)
        # The WAF on the fleet's one public load balancer: per-address limit from the gateway's size.
        self.web_acl = protect_load_balancer(
            self,
            WebAclProps(
                name=f"{name}-gateway",
                rate_limit=gateway_client_rate_limit(sizing),
                load_balancer=self.service.load_balancer,
                key=props.key,
                block=props.waf_block,
            ),
            enabled=props.waf,
            what=f"the gateway of {fleet}",
        )
        self.monitoring = GatewayMonitoringConstruct(
            self,
            "Monitoring",
            GatewayMonitoringProps(
                title=f"gateway of {fleet} ({stage})",
                fleet=fleet,
                stage=stage,
                topic=props.topic,
                service=self.service,
                database=self.database,
                cache=self.cache,
            ),
        )
        scheme = "https" if props.certificate_arn else "http"
        self.url = f"{scheme}://{self.service.load_balancer.load_balancer_dns_name}/v1"

    def _keys_secret(self, fleet: str, stage: str) -> secretsmanager.Secret:
        secret = secretsmanager.Secret(
            self,
            "Keys",
            secret_name=gateway_keys_secret_name(fleet, stage),
            description=f"gateway of {fleet} ({stage}): sha256 of each consumer's keys; "
            f"`llmfleet gateway keys` writes it",
            encryption_key=self.key,
            # Hashes only, never a key: an empty mapping until the first `llmfleet gateway keys create`.
            secret_string_value=cdk.SecretValue.unsafe_plain_text("{}"),
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        rotation = "it holds hashes of consumers' keys, which `llmfleet gateway keys rotate` replaces per consumer"
        acknowledge(secret, "AwsSolutions-SMG4", rotation)
        acknowledge(secret, "NIST.800.53.R5-SecretsManagerRotationEnabled", rotation)
        return secret

    def _config(self, props: GatewayProps, plans: list[AnyPlan]) -> GatewayConfig:
        ecs_urls = {
            name: f"http://{model.gpu_service.load_balancer.load_balancer_dns_name}/v1"
            for name, model in props.models.items()
            if model.gpu_service is not None
        }
        endpoints = {
            name: SageMakerUpstream(
                endpoint_name=model.endpoint.endpoint_name,
                region=model.endpoint.plan.region,
                inference_component=model.endpoint.inference_component_name,
            )
            for name, model in props.models.items()
            if model.endpoint is not None and model.gpu_service is None
        }
        return gateway_config(
            props.manifest, plans, props.consumers, ecs_base_urls=ecs_urls, sagemaker_endpoints=endpoints
        )

    def _endpoint_arns(self) -> list[str]:
        """The endpoints (and inference components) the config routes to: what the task role may invoke."""
        stack = cdk.Stack.of(self)
        arns = []
        for upstream in self.config.upstreams.values():
            if isinstance(upstream, SageMakerUpstream):
                arns.append(
                    stack.format_arn(
                        service="sagemaker", resource="endpoint", resource_name=upstream.endpoint_name.lower()
                    )
                )
                if upstream.inference_component is not None:
                    component = upstream.inference_component.lower()
                    arns.append(
                        stack.format_arn(service="sagemaker", resource="inference-component", resource_name=component)
                    )
        return arns

    def _image(self, props: GatewayProps) -> ServingImage:
        if props.image_uri is not None:
            return ecr_image(self, "ImageRepository", props.image_uri, "GatewayProps.image_uri")
        warn_if_placeholder(
            self, "gateway image", props.base_image, "gateway_base_image", "-c gateway_image=<an ECR image URI>"
        )
        asset = image_asset(
            self,
            "Image",
            props.repo_root,
            GATEWAY_DOCKERFILE,
            GATEWAY_IMAGE_CONTEXT,
            build_args={GATEWAY_BASE_IMAGE_ARG: props.base_image},
        )
        return ServingImage(
            container_image=cdk.aws_ecs.ContainerImage.from_docker_image_asset(asset),
            uri=asset.image_uri,
            repository=asset.repository,
        )
