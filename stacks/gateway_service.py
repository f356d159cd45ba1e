"""The fleet's gateway (containers/gateway/: LiteLLM's proxy in config mode) as a Fargate service behind
the fleet's one public load balancer: a key, limits, a budget and usage per consumer, routes by `model`
to each model's internal load balancer or SageMaker endpoint (model_store/gateway/contract.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from llmfleet.model_store.gateway.contract import (
    CONFIG_ENV,
    DB_SECRET_FIELDS,
    GATEWAY_HEALTH_PATH,
    GATEWAY_PORT,
    GatewaySizing,
    KEYS_SECRET_ACTIONS,
    KEYS_SECRET_ENV,
    REDIS_URL_ENV,
    SAGEMAKER_INVOKE_ACTIONS,
    upstream_key_env,
)
from llmfleet.stacks.compliance import acknowledge
from llmfleet.stacks.config import StackConfigError
from llmfleet.stacks.load_balancer import (
    LoadBalancerMetrics,
    allow_clients,
    client_listener,
    client_load_balancer,
    forbidden,
)
from llmfleet.stacks.metrics import FIVE_MINUTES
from llmfleet.stacks.store import ServingImage

# What containers/gateway/Dockerfile copies: the hash lock, model_store and its own folder.
GATEWAY_IMAGE_CONTEXT = ["requirements/gateway-lock.txt", "model_store", "containers/__init__.py", "containers/gateway"]
PATHS_PER_RULE = 5  # an ALB listener rule takes at most 5 condition values (ELB quotas, 2026-11)
STARTUP_GRACE = cdk.Duration.seconds(60)  # LiteLLM's proxy started in 11-17 s on two shared cores (issue 24)
DRAIN = cdk.Duration.seconds(30)  # streamed answers in flight finish before a task stops
SCALE_COOLDOWN = cdk.Duration.seconds(60)
AWS_APIS = 443  # Secrets Manager, ECR, CloudWatch Logs, SageMaker runtime


@dataclass(frozen=True)
class GatewayServiceProps:
    """what: how warnings name the service ("gateway of demo/prod"). vpc, key, access_logs: the fleet's
    network, KMS key (log group) and log bucket. image: the gateway image. config_json: the gateway's
    config (model_store.gateway.config, LLMFLEET_GATEWAY_CONFIG), CDK tokens inside. sizing: task size and
    bounds (model_store.gateway.contract.gateway_sizing). keys_secret: the consumers' key hashes.
    database_secret: the usage database's generated secret. redis_url: `rediss://host:port`.
    upstream_keys: each ECS model's API key secret, by model name. sagemaker_endpoint_arns: the fleet's
    endpoints (and inference components) the task role may invoke. client_paths: what the load balancer
    forwards. certificate_arn, allowed_cidr, deletion_protection: the load balancer's (defaults None: plain
    HTTP with a warning, "0.0.0.0/0", True)."""

    what: str
    vpc: ec2.IVpc
    key: kms.IKey
    access_logs: s3.IBucket
    image: ServingImage
    config_json: str
    sizing: GatewaySizing
    keys_secret: secretsmanager.ISecret
    database_secret: secretsmanager.ISecret
    redis_url: str
    upstream_keys: Mapping[str, secretsmanager.ISecret]
    sagemaker_endpoint_arns: Sequence[str]
    client_paths: Sequence[str]
    certificate_arn: str | None = None
    allowed_cidr: str = "0.0.0.0/0"
    deletion_protection: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.sizing.min_tasks <= self.sizing.max_tasks:
            raise StackConfigError(
                f"GatewayServiceProps.sizing: min_tasks {self.sizing.min_tasks}, max_tasks {self.sizing.max_tasks}; "
                f"must satisfy 1 <= min_tasks <= max_tasks"
            )
        if not self.client_paths:
            raise StackConfigError("GatewayServiceProps.client_paths: empty; the load balancer would forward nothing")


class GatewayServiceConstruct(LoadBalancerMetrics, Construct):
    """Fargate cluster, gateway task and service, its security group (egress only to what it calls), the
    public ALB forwarding the client paths, autoscaling on CPU. Attributes: cluster, task_definition,
    service, security_group, load_balancer, listener, target_group, log_group."""

    def __init__(self, scope: Construct, id: str, props: GatewayServiceProps) -> None:
        super().__init__(scope, id)
        self.sizing = props.sizing
        private = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        self.cluster = ecs.Cluster(self, "Cluster", vpc=props.vpc, container_insights_v2=ecs.ContainerInsights.ENHANCED)
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            encryption_key=props.key,
            retention=logs.RetentionDays.THREE_MONTHS,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        self.task_definition = self._task_definition(
            props
        )  # env, ECS secrets, read-only root, the task role's two grants
        # Outbound only to the model load balancers, Redis and Postgres (their owners add those rules) and AWS APIs.
        self.security_group = ec2.SecurityGroup(
            self, "SecurityGroup", vpc=props.vpc, description=f"{props.what} tasks", allow_all_outbound=False
        )
        self.security_group.add_egress_rule(
            ec2.Peer.any_ipv4(),
            ec2.Port.tcp(AWS_APIS),
            "AWS APIs: Secrets Manager, ECR, CloudWatch Logs, SageMaker runtime",
        )
        self.connections = self.security_group.connections
        self.service = ecs.FargateService(
            self,
            "Service",
            cluster=self.cluster,
            task_definition=self.task_definition,
            # No DesiredCount in the template: autoscaling owns it (a deploy must not reset a scaled-out service).
            security_groups=[self.security_group],
            vpc_subnets=private,
            assign_public_ip=False,
            circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
            health_check_grace_period=STARTUP_GRACE,
            min_healthy_percent=100,
            max_healthy_percent=200,
            propagate_tags=ecs.PropagatedTagSource.SERVICE,
        )
        self._load_balancer(props)  # the fleet's one public ALB: client paths to the gateway, the rest 403
        self.scaling = self.service.auto_scale_task_count(
            min_capacity=props.sizing.min_tasks, max_capacity=props.sizing.max_tasks
        )
        self.scaling.scale_on_cpu_utilization(
            "Cpu",
            target_utilization_percent=props.sizing.cpu_target_percent,
            scale_in_cooldown=SCALE_COOLDOWN,
            scale_out_cooldown=SCALE_COOLDOWN,
        )

    def _task_definition(self, props: GatewayServiceProps) -> ecs.FargateTaskDefinition:
        task = ecs.FargateTaskDefinition(
            self,
            "Task",
            cpu=props.sizing.cpu_units,
            memory_limit_mib=props.sizing.memory_mib,
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.X86_64, operating_system_family=ecs.OperatingSystemFamily.LINUX
            ),
        )
        secrets = {
            env: ecs.Secret.from_secrets_manager(props.database_secret, field)
            for env, field in DB_SECRET_FIELDS.items()
        }
        secrets |= self._upstream_keys(props, task)
        container = task.add_container(
            "gateway",
            image=props.image.container_image,
            environment={
                CONFIG_ENV: props.config_json,
                KEYS_SECRET_ENV: props.keys_secret.secret_name,
                REDIS_URL_ENV: props.redis_url,
            },
            secrets=secrets,
            port_mappings=[ecs.PortMapping(container_port=GATEWAY_PORT)],
            logging=ecs.LogDrivers.aws_logs(
                stream_prefix="gateway", log_group=self.log_group
            ),  # and the EMF usage lines
            stop_timeout=DRAIN,
            readonly_root_filesystem=True,
        )
        task.add_volume(name="tmp")  # Fargate task storage: Python's and LiteLLM's temporary files
        container.add_mount_points(ecs.MountPoint(container_path="/tmp", source_volume="tmp", read_only=False))
        # The task role: the key hashes (read only) and the fleet's SageMaker endpoints, nothing else.
        task.add_to_task_role_policy(
            iam.PolicyStatement(actions=list(KEYS_SECRET_ACTIONS), resources=[props.keys_secret.secret_arn])
        )
        if props.keys_secret.encryption_key is not None:
            props.keys_secret.encryption_key.grant(
                kms.ViaServicePrincipal(f"secretsmanager.{cdk.Stack.of(self).region}.amazonaws.com", task.task_role),
                "kms:Decrypt",
            )
        if props.sagemaker_endpoint_arns:
            task.add_to_task_role_policy(
                iam.PolicyStatement(
                    actions=list(SAGEMAKER_INVOKE_ACTIONS), resources=list(props.sagemaker_endpoint_arns)
                )
            )
        acknowledge(
            task,
            "AwsSolutions-ECS2",
            "the environment holds the gateway's routes and consumers' limits (no keys), the Redis URL and the key "
            "hashes' secret name; the database credentials and the models' API keys are ECS secrets",
        )
        acknowledge(
            task.obtain_execution_role(),
            "AwsSolutions-IAM5[Resource::*]",
            "ecr:GetAuthorizationToken (image pull) takes no resource scoping; "
            "the pull itself is scoped to the repository",
        )
        return task

    def _upstream_keys(self, props: GatewayServiceProps, task: ecs.FargateTaskDefinition) -> dict[str, ecs.Secret]:
        """Each model's API key as an ECS secret. The secret is referred to by ARN, and its key's Decrypt
        (through Secrets Manager only) is granted in the execution role's own policy: a grant on the
        secret itself would write this stack's role into the model stack's key policy, a cycle, as the
        model stacks are deployed first."""
        secrets = {}
        region = cdk.Stack.of(self).region
        for model, secret in sorted(props.upstream_keys.items()):
            env = upstream_key_env(model)
            secrets[env] = ecs.Secret.from_secrets_manager(
                secretsmanager.Secret.from_secret_complete_arn(self, f"UpstreamKey{env}", secret.secret_arn)
            )
            if secret.encryption_key is not None:
                task.obtain_execution_role().add_to_principal_policy(
                    iam.PolicyStatement(
                        actions=["kms:Decrypt"],
                        resources=[secret.encryption_key.key_arn],
                        conditions={"StringEquals": {"kms:ViaService": f"secretsmanager.{region}.amazonaws.com"}},
                    )
                )
        return secrets

    def _load_balancer(self, props: GatewayServiceProps) -> None:
        https = props.certificate_arn is not None
        parts = client_load_balancer(
            self,
            vpc=props.vpc,
            description=f"load balancer of the {props.what}",
            access_logs=props.access_logs,
            log_prefix="gateway",
            deletion_protection=props.deletion_protection,
        )
        self.alb_security_group, self.load_balancer = parts.security_group, parts.load_balancer
        allow_clients(self.alb_security_group, props.allowed_cidr, https, f"clients of the {props.what}")
        self.security_group.add_ingress_rule(
            self.alb_security_group, ec2.Port.tcp(GATEWAY_PORT), "from the load balancer only"
        )
        self.alb_security_group.add_egress_rule(
            self.security_group, ec2.Port.tcp(GATEWAY_PORT), "to the gateway tasks only"
        )
        refused = forbidden()
        self.listener = client_listener(
            self.load_balancer, certificate_arn=props.certificate_arn, default_action=refused, what=f"the {props.what}"
        )
        self.target_group = elbv2.ApplicationTargetGroup(
            self,
            "Targets",
            vpc=props.vpc,
            port=GATEWAY_PORT,
            protocol=elbv2.ApplicationProtocol.HTTP,
            target_type=elbv2.TargetType.IP,
            deregistration_delay=DRAIN,
            load_balancing_algorithm_type=elbv2.TargetGroupLoadBalancingAlgorithmType.LEAST_OUTSTANDING_REQUESTS,
            health_check=elbv2.HealthCheck(path=GATEWAY_HEALTH_PATH, port="traffic-port", healthy_http_codes="200"),
        )
        self.service.attach_to_application_target_group(self.target_group)
        paths = list(props.client_paths)
        for index in range(0, len(paths), PATHS_PER_RULE):
            self.listener.add_target_groups(
                f"ClientPaths{index // PATHS_PER_RULE}",
                target_groups=[self.target_group],
                priority=10 + index // PATHS_PER_RULE,
                conditions=[elbv2.ListenerCondition.path_patterns(paths[index : index + PATHS_PER_RULE])],
            )

    # --- metrics (requests and 5xx: LoadBalancerMetrics) ------------------------------------

    def metric_running_tasks(self) -> cloudwatch.Metric:
        """Gateway tasks running (Container Insights), the fewest in five minutes."""
        return cloudwatch.Metric(
            namespace="ECS/ContainerInsights",
            metric_name="RunningTaskCount",
            dimensions_map={"ClusterName": self.cluster.cluster_name, "ServiceName": self.service.service_name},
            statistic="Minimum",
            period=FIVE_MINUTES,
        )

    def metric_cpu(self) -> cloudwatch.Metric:
        return self.service.metric_cpu_utilization(period=FIVE_MINUTES, statistic="Average")
