"""One model served by vLLM on GPU EC2 instances under ECS, behind an Application Load Balancer.

Every size and timing comes from the model's plan: instance type, GPUs (the plan's
tensor-parallel size), memory, NVMe, health-check grace, drain, autoscaling targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_autoscaling as autoscaling
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

from llmfleet.model_store.contract.container import container_env, VLLM_API_KEY_ENV
from llmfleet.model_store.contract.front_door import forwarded_paths, VLLM_ADMIN_PATHS
from llmfleet.model_store.gateway.contract import UPSTREAM_HTTP_PORT
from llmfleet.model_store.contract.plan import AnyPlan, DEFAULT_MODEL_ROOT, DeploymentPlan
from llmfleet.model_store.ops.status import TAG_FLEET, TAG_MODEL, TAG_STAGE
from llmfleet.model_store.store.store import StoreLocation
from llmfleet.stacks.compliance import acknowledge, checkov_skip
from llmfleet.stacks.config import StackConfigError
from llmfleet.stacks.load_balancer import (
    LoadBalancerMetrics,
    allow_clients,
    client_listener,
    client_load_balancer,
    forbidden,
)
from llmfleet.model_store.contract.telemetry import REQUESTS_WAITING
from llmfleet.stacks.metrics import FIVE_MINUTES, ONE_MINUTE, fleet_metric
from llmfleet.stacks.scaling import scale_to_zero_when_idle, wake_on_refused_requests
from llmfleet.stacks.store import ServingImage, grant_serving_access
from llmfleet.stacks.user_data import LAUNCH_HOOK_NAME, instance_user_data
from llmfleet.model_store.contract.targets import ECS

TARGET = ECS.name  # the container's target and the Target dimension of its metrics
CONTAINER_PORT = ECS.port
# The load balancer forwards only model_store.contract.front_door's client paths (plus the server's
# self-description, which needs the key); vLLM's admin routes get 403 rules ahead of them.


def client_paths(plan: DeploymentPlan) -> tuple[str, ...]:
    """The paths the load balancer forwards for this model's kind (model_store.contract.front_door)."""
    return forwarded_paths(plan.kind)


# An ALB listener rule takes at most 5 condition values (ELB quotas, 2026-11).
PATHS_PER_RULE = 5
# ECS registers less memory than the instance type lists (kernel, agent); leave a tenth.
TASK_MEMORY_SHARE = 0.9
# NCCL and vLLM's worker processes exchange tensors through /dev/shm (Docker's 64 MiB is too small).
SHARED_MEMORY_SHARE = 0.125
# The container's root filesystem is read-only; these are the paths it writes, each a volume
# (/dev/shm is the task's shared memory, above). The model root lives on the instance's NVMe
# (stacks/user_data.py); the others are Docker volumes of the task alone, made at its start from
# the image's directory (its owner and mode) and removed when it stops.
SERVING_HOME = "/home/llmfleet"  # containers/vllm/Dockerfile: the serving user's HOME
WRITABLE_PATHS = {
    "models": DEFAULT_MODEL_ROOT,  # weights, adapters, compile cache (LLMFLEET_MODEL_ROOT)
    "tmp": "/tmp",  # the supervisor's state directory (tempfile.mkdtemp), Python's and torch's temporary files
    "home": SERVING_HOME,  # ~/.cache and ~/.config of vLLM, torch, Triton, CUDA, Hugging Face
}
# A warm-pool instance's first boot pulls the ~10 GB image before it may stop; past this, Auto
# Scaling goes on without the ready signal (the ECS agent then pulls at task start).
INSTANCE_READY_TIMEOUT = cdk.Duration.minutes(15)


@dataclass(frozen=True)
class GpuServiceProps:
    """plan: the model's serving plan (instance, GPUs, timings, scaling). vpc, store, key, image:
    the fleet's shared network, model store, KMS key and serving image. access_logs: the bucket
    for load-balancer access logs. certificate_arn: an ACM certificate for HTTPS on 443 (default
    None: HTTP on 80 only). allowed_cidr: who may reach the load balancer (default 0.0.0.0/0; the
    API key still guards /v1). deletion_protection: the load balancer refuses deletion (default True;
    False for a demo stage that `cdk destroy` must remove). internal: the load balancer is internal, in the
    private subnets, plain HTTP on UPSTREAM_HTTP_PORT, reached only from the security groups given to
    `allow_from` (the fleet's gateway); certificate_arn and allowed_cidr are then unused (default False:
    internet-facing). managed_termination_protection: default False (see below)."""

    plan: AnyPlan
    vpc: ec2.IVpc
    store: StoreLocation
    key: kms.IKey
    image: ServingImage
    access_logs: s3.IBucket
    certificate_arn: str | None = None
    allowed_cidr: str = "0.0.0.0/0"
    deletion_protection: bool = True
    internal: bool = False
    # Off: with it on, ECS protects every instance running a task and `cdk destroy` hangs on the
    # ASG (SECURITY.md). Managed draining gives the same guarantee to in-flight requests: ECS drains
    # an instance's tasks (deregistration delay, SIGTERM, stop timeout) before the ASG ends it.
    managed_termination_protection: bool = False

    def __post_init__(self) -> None:
        plan = self.plan
        where = f"GpuServiceProps for model {plan.model_name!r}"
        if TARGET not in plan.targets:
            raise StackConfigError(f"{where}: plan targets {plan.targets}, not {TARGET!r}")
        if plan.tensor_parallel_size > plan.gpus_per_instance:
            raise StackConfigError(
                f"{where}: tensor_parallel_size {plan.tensor_parallel_size} exceeds the "
                f"{plan.gpus_per_instance} GPUs of {plan.instance_type}"
            )
        if not 0 < plan.timing.drain_seconds <= 120:
            raise StackConfigError(f"{where}: drain_seconds {plan.timing.drain_seconds}; ECS stop timeout allows 1..120")
        if plan.autoscaling.max_capacity < 1:
            raise StackConfigError(f"{where}: autoscaling.max_capacity {plan.autoscaling.max_capacity}; must be >= 1")


class GpuServiceConstruct(LoadBalancerMetrics, Construct):
    """ECS cluster, GPU capacity, vLLM task and service, ALB with a client-path allowlist, autoscaling."""

    def __init__(self, scope: Construct, id: str, props: GpuServiceProps) -> None:
        super().__init__(scope, id)
        self.plan = plan = props.plan
        self.internal = props.internal
        private = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)

        self.cluster = ecs.Cluster(
            self, "Cluster", vpc=props.vpc, container_insights_v2=ecs.ContainerInsights.ENHANCED
        )
        self.auto_scaling_group = self._gpu_capacity(props, private)
        self.capacity_provider = ecs.AsgCapacityProvider(
            self,
            "CapacityProvider",
            auto_scaling_group=self.auto_scaling_group,
            enable_managed_scaling=True,
            enable_managed_termination_protection=props.managed_termination_protection,
            enable_managed_draining=True,
            target_capacity_percent=100,
            # An instance counts as warm only once the image is pulled and weights are loaded.
            instance_warmup_period=plan.timing.startup_grace_seconds,
        )
        self.cluster.add_asg_capacity_provider(self.capacity_provider)
        checkov_skip(
            self.instance_role.node.find_child("DefaultPolicy"),  # written by the capacity provider above
            "CKV_AWS_111",
            "the ECS agent's registration and polling actions take no resource scoping"
            + ("; the warm pool's CompleteLifecycleAction is limited to this model's group by its tags" if plan.autoscaling.warm_pool_instances else ""),
        )

        # The secret's own key lives in this stack: granting the task's execution role on the fleet key
        # (Secrets Manager decrypts via the service) would edit the base stack's key policy and tie the stacks in a cycle.
        # It guards only the API key, which goes with the stack (the fleet key and the store stay).
        self.api_key_encryption = kms.Key(
            self,
            "ApiKeyKey",
            enable_key_rotation=True,
            description=f"llmfleet: API key of {plan.model_name}",
            removal_policy=cdk.RemovalPolicy.DESTROY,
            pending_window=cdk.Duration.days(7),
        )
        self.api_key = secretsmanager.Secret(
            self,
            "ApiKey",
            description=f"vLLM API key for {plan.model_name} ({plan.stage}); clients send it as a Bearer token",
            encryption_key=self.api_key_encryption,
            generate_secret_string=secretsmanager.SecretStringGenerator(password_length=48, exclude_punctuation=True),
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        for finding in ("AwsSolutions-SMG4", "NIST.800.53.R5-SecretsManagerRotationEnabled"):
            acknowledge(
                self.api_key,
                finding,
                "a static client API key: rotating it needs a client rollout, so it is rotated by the operator",
            )
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            encryption_key=props.key,
            retention=logs.RetentionDays.THREE_MONTHS,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        self.task_definition = self._task_definition(props)

        self.task_security_group = ec2.SecurityGroup(
            self, "TaskSecurityGroup", vpc=props.vpc, description=f"vLLM tasks of {plan.model_name}"
        )
        self.service = ecs.Ec2Service(
            self,
            "Service",
            cluster=self.cluster,
            task_definition=self.task_definition,
            # No DesiredCount in the template: autoscaling owns it, and a deploy must not reset a
            # scaled-out service (CloudFormation starts a new service at one task).
            capacity_provider_strategies=[
                ecs.CapacityProviderStrategy(capacity_provider=self.capacity_provider.capacity_provider_name, weight=1)
            ],
            security_groups=[self.task_security_group],
            vpc_subnets=private,
            circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
            health_check_grace_period=cdk.Duration.seconds(plan.timing.startup_grace_seconds),
            # New tasks start (on new GPU instances) before old ones stop: no capacity dip.
            min_healthy_percent=100,
            max_healthy_percent=200,
            propagate_tags=ecs.PropagatedTagSource.SERVICE,
        )
        self._load_balancer(props)
        self._autoscaling()

    # --- capacity --------------------------------------------------------------------------

    def _gpu_capacity(self, props: GpuServiceProps, private: ec2.SubnetSelection) -> autoscaling.AutoScalingGroup:
        plan = props.plan
        warm_pool = plan.autoscaling.warm_pool_instances
        user_data = ec2.UserData.for_linux()
        user_data.add_commands(instance_user_data(region=plan.region, image_uri=props.image.uri, warm_pool=warm_pool > 0))
        instance_role = iam.Role(self, "InstanceRole", assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"))
        instance_security_group = ec2.SecurityGroup(
            self, "InstanceSecurityGroup", vpc=props.vpc, description=f"GPU instances of {plan.model_name} (no ingress)"
        )
        launch_template = ec2.LaunchTemplate(
            self,
            "LaunchTemplate",
            instance_type=ec2.InstanceType(plan.instance_type),
            # An SSM parameter resolved by CloudFormation at deploy time: no account lookup at synth.
            machine_image=ecs.EcsOptimizedImage.amazon_linux2023(ecs.AmiHardwareType.GPU),
            user_data=user_data,
            role=instance_role,
            security_group=instance_security_group,
            require_imdsv2=True,
            http_put_response_hop_limit=1,
            detailed_monitoring=True,
            block_devices=[
                ec2.BlockDevice(
                    device_name="/dev/xvda",
                    volume=ec2.BlockDeviceVolume.ebs(plan.root_volume_gib, encrypted=True, volume_type=ec2.EbsDeviceVolumeType.GP3),
                )
            ],
        )
        group = autoscaling.AutoScalingGroup(
            self,
            "Instances",
            vpc=props.vpc,
            vpc_subnets=private,
            launch_template=launch_template,
            min_capacity=0,
            # A rolling deployment runs new tasks beside old ones, one task per GPU instance.
            max_capacity=2 * plan.autoscaling.max_capacity,
            new_instances_protected_from_scale_in=props.managed_termination_protection,
            group_metrics=[autoscaling.GroupMetrics.all()],  # GroupInServiceInstances for the dashboard
        )
        acknowledge(
            group,
            "AwsSolutions-AS3",
            "instance launches and terminations are driven by the ECS capacity provider; service-level alarms "
            "(tasks pending, unhealthy hosts) notify operators",
        )
        for finding in ("AwsSolutions-IAM5[Resource::*]", "AwsSolutions-IAM5[Action::ecs:Submit*]"):
            acknowledge(
                instance_role,
                finding,
                "the ECS agent's own policy (added by CDK's capacity provider): registration and polling actions "
                "(ecs:Submit*, ecs:Poll, ecs:DiscoverPollEndpoint, ecr:GetAuthorizationToken) take no resource scoping"
                + (
                    "; the warm pool's ready signal: autoscaling:DescribeAutoScalingInstances takes none, and "
                    "CompleteLifecycleAction is limited to this model's group by its tags"
                    if warm_pool
                    else ""
                ),
            )
        self.instance_role = instance_role
        if warm_pool:
            self._warm_pool(props, group, warm_pool)
        return group

    def _warm_pool(self, props: GpuServiceProps, group: autoscaling.AutoScalingGroup, instances: int) -> None:
        """Stopped instances that booted once and pulled the image; the launch hook holds each until user data is done."""
        # Exactly `instances` wait: the pool holds max(min_size, max_group_prepared_capacity - desired).
        # ECS refuses reuse_on_scale_in for its capacity providers: scaled-in instances end, the pool refills.
        self.warm_pool = group.add_warm_pool(
            min_size=instances, max_group_prepared_capacity=instances, pool_state=autoscaling.PoolState.STOPPED
        )
        group.add_lifecycle_hook(
            "InstanceReady",
            lifecycle_hook_name=LAUNCH_HOOK_NAME,
            lifecycle_transition=autoscaling.LifecycleTransition.INSTANCE_LAUNCHING,
            heartbeat_timeout=INSTANCE_READY_TIMEOUT,
            default_result=autoscaling.DefaultResult.CONTINUE,
        )
        props.image.grant_pull(self.instance_role)  # the pre-pull: this repository only
        # Scoped by the group's tags, not its ARN: the launch template waits for this policy, and the
        # group for the launch template, so naming the group here would close a cycle.
        plan = props.plan
        group_tags = {TAG_FLEET: plan.fleet, TAG_STAGE: plan.stage, TAG_MODEL: plan.model_name}
        for key, value in group_tags.items():
            cdk.Tags.of(group).add(key, value)
        self.instance_role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["autoscaling:CompleteLifecycleAction"],
                resources=["*"],
                conditions={"StringEquals": {f"autoscaling:ResourceTag/{key}": value for key, value in group_tags.items()}},
            )
        )
        # The instance finds its group's name by its id; DescribeAutoScalingInstances takes no resource.
        self.instance_role.add_to_principal_policy(
            iam.PolicyStatement(actions=["autoscaling:DescribeAutoScalingInstances"], resources=["*"])
        )

    # --- task -----------------------------------------------------------------------------

    def _task_definition(self, props: GpuServiceProps) -> ecs.Ec2TaskDefinition:
        plan = props.plan
        task = ecs.Ec2TaskDefinition(self, "Task", network_mode=ecs.NetworkMode.AWS_VPC, volumes=self._writable_volumes())
        grant_serving_access(task.task_role, plan, props.store, props.key, TARGET)
        instance_mib = plan.instance_memory_gib * 1024
        container = task.add_container(
            "vllm",
            image=props.image.container_image,
            gpu_count=plan.tensor_parallel_size,
            memory_reservation_mib=int(instance_mib * TASK_MEMORY_SHARE),
            environment=container_env(plan, props.store.uri, TARGET, model_root=DEFAULT_MODEL_ROOT),
            secrets={VLLM_API_KEY_ENV: ecs.Secret.from_secrets_manager(self.api_key)},
            port_mappings=[ecs.PortMapping(container_port=CONTAINER_PORT)],
            logging=ecs.LogDrivers.aws_logs(stream_prefix=plan.model_name, log_group=self.log_group),
            stop_timeout=cdk.Duration.seconds(plan.timing.drain_seconds),
            readonly_root_filesystem=True,  # writes go to WRITABLE_PATHS' volumes only
            linux_parameters=ecs.LinuxParameters(
                self, "LinuxParameters", init_process_enabled=True,
                shared_memory_size=int(instance_mib * SHARED_MEMORY_SHARE),
            ),
            ulimits=[
                ecs.Ulimit(name=ecs.UlimitName.MEMLOCK, soft_limit=-1, hard_limit=-1),
                ecs.Ulimit(name=ecs.UlimitName.NOFILE, soft_limit=65535, hard_limit=65535),
            ],
        )
        container.add_mount_points(
            *(ecs.MountPoint(container_path=path, source_volume=name, read_only=False) for name, path in WRITABLE_PATHS.items())
        )
        acknowledge(
            task.obtain_execution_role(),
            "AwsSolutions-IAM5[Resource::*]",
            "ecr:GetAuthorizationToken (image pull) takes no resource scoping; the pull itself is scoped to the repository",
        )
        acknowledge(
            task,
            "AwsSolutions-ECS2",
            "the environment holds the serving plan and the store location, nothing secret; the API key is an ECS secret",
        )
        return task

    @staticmethod
    def _writable_volumes() -> list[ecs.Volume]:
        """WRITABLE_PATHS as task volumes: the instance's model cache, and Docker volumes of the task alone."""
        task_volume = ecs.DockerVolumeConfiguration(driver="local", scope=ecs.Scope.TASK)
        return [
            ecs.Volume(name=name, host=ecs.Host(source_path=path))
            if path == DEFAULT_MODEL_ROOT
            else ecs.Volume(name=name, docker_volume_configuration=task_volume)
            for name, path in WRITABLE_PATHS.items()
        ]

    # --- load balancer --------------------------------------------------------------------

    def _load_balancer(self, props: GpuServiceProps) -> None:
        """Internet-facing (or internal) ALB: only client paths reach vLLM, everything else is answered 403."""
        https = props.certificate_arn is not None and not props.internal
        self._alb(props)  # security group, ALB (deletion protection, access logs)
        if not props.internal:  # clients on 443 (80 without a certificate); internal: the gateway, added by it
            allow_clients(self.alb_security_group, props.allowed_cidr, https, f"clients of {props.plan.model_name}")
        self._tasks_from_alb_only()  # ALB <-> tasks only
        refused = forbidden()
        self.listener = client_listener(  # default action 403
            self.load_balancer,
            certificate_arn=props.certificate_arn,
            default_action=refused,
            what=f"model {props.plan.model_name}",
            internal=props.internal,
        )
        self.target_group = self._target_group(props)  # the plan's health check and drain
        self.service.attach_to_application_target_group(self.target_group)
        # Admin paths 403 first, then the model kind's client paths forward.
        self._path_rules(refused, client_paths(props.plan))

    def _alb(self, props: GpuServiceProps) -> None:
        plan = props.plan
        parts = client_load_balancer(
            self,
            vpc=props.vpc,
            description=f"load balancer of {plan.model_name}",
            access_logs=props.access_logs,
            log_prefix=plan.model_name,
            deletion_protection=props.deletion_protection,
            internal=props.internal,
        )
        self.alb_security_group, self.load_balancer = parts.security_group, parts.load_balancer

    def _tasks_from_alb_only(self) -> None:
        self.task_security_group.add_ingress_rule(
            self.alb_security_group, ec2.Port.tcp(CONTAINER_PORT), "vLLM from the load balancer only"
        )
        self.alb_security_group.add_egress_rule(
            self.task_security_group, ec2.Port.tcp(CONTAINER_PORT), "to the vLLM tasks only"
        )

    def allow_from(self, peer: ec2.IConnectable) -> None:
        """Let `peer` (the gateway's tasks) reach the internal load balancer's listener. The rules are
        written in the peer's stack, so the model's stack never refers to the gateway's."""
        peer.connections.allow_to(
            self.load_balancer, ec2.Port.tcp(UPSTREAM_HTTP_PORT), f"to the load balancer of {self.plan.model_name}"
        )

    def _target_group(self, props: GpuServiceProps) -> elbv2.ApplicationTargetGroup:
        plan = props.plan
        return elbv2.ApplicationTargetGroup(
            self,
            "Targets",
            vpc=props.vpc,
            port=CONTAINER_PORT,
            protocol=elbv2.ApplicationProtocol.HTTP,
            target_type=elbv2.TargetType.IP,
            deregistration_delay=cdk.Duration.seconds(plan.timing.deregistration_delay_seconds),
            load_balancing_algorithm_type=elbv2.TargetGroupLoadBalancingAlgorithmType.LEAST_OUTSTANDING_REQUESTS,
            health_check=elbv2.HealthCheck(
                path=plan.timing.health_check_path,
                port="traffic-port",
                healthy_http_codes="200",
                interval=cdk.Duration.seconds(plan.timing.health_check_interval_seconds),
                timeout=cdk.Duration.seconds(plan.timing.health_check_timeout_seconds),
                healthy_threshold_count=plan.timing.healthy_threshold,
                unhealthy_threshold_count=plan.timing.unhealthy_threshold,
            ),
        )

    def _path_rules(self, refused: elbv2.ListenerAction, forwarded: tuple[str, ...]) -> None:
        # vLLM's admin routes get their own 403 rules ahead of everything: they stay closed even if
        # a broader forward rule is added later.
        for index in range(0, len(VLLM_ADMIN_PATHS), PATHS_PER_RULE):
            self.listener.add_action(
                f"AdminPaths{index // PATHS_PER_RULE}",
                priority=1 + index // PATHS_PER_RULE,
                conditions=[elbv2.ListenerCondition.path_patterns(list(VLLM_ADMIN_PATHS[index : index + PATHS_PER_RULE]))],
                action=refused,
            )
        for index in range(0, len(forwarded), PATHS_PER_RULE):
            self.listener.add_target_groups(
                f"ClientPaths{index // PATHS_PER_RULE}",
                target_groups=[self.target_group],
                priority=10 + index // PATHS_PER_RULE,
                conditions=[elbv2.ListenerCondition.path_patterns(list(forwarded[index : index + PATHS_PER_RULE]))],
            )

    # --- autoscaling ----------------------------------------------------------------------

    def _autoscaling(self) -> None:
        scaling_plan = self.plan.autoscaling
        self.scaling = self.service.auto_scale_task_count(
            min_capacity=scaling_plan.min_capacity, max_capacity=scaling_plan.max_capacity
        )
        cooldowns = {
            "scale_in_cooldown": cdk.Duration.seconds(scaling_plan.scale_in_cooldown_seconds),
            "scale_out_cooldown": cdk.Duration.seconds(scaling_plan.scale_out_cooldown_seconds),
        }
        # Two target-tracking policies: the service scales out when either asks and in only when both allow.
        self.scaling.scale_to_track_custom_metric(
            "QueueDepth",
            metric=fleet_metric(self.plan, REQUESTS_WAITING, TARGET),
            target_value=scaling_plan.target_queue_depth,
            **cooldowns,
        )
        self.scaling.scale_on_request_count(
            "RequestsPerTarget",
            requests_per_target=scaling_plan.target_requests_per_minute,
            target_group=self.target_group,
            **cooldowns,
        )
        if scaling_plan.min_capacity == 0:
            target, where = self.scaling.node.find_child("Target"), f"{self.plan.model_name} on ECS"
            # With no target the load balancer answers 503 itself: that wakes the service.
            self.wake_alarm = wake_on_refused_requests(
                self, target, self.metric_load_balancer_5xx(), where, scaling_plan.wake_seconds[TARGET]
            )
            self.idle_alarm = scale_to_zero_when_idle(
                self,
                target,
                self.metric_client_requests(),
                scaling_plan.idle_minutes,
                f"{where} (the capacity provider then ends the instances)",
            )

    # --- metrics (requests and 5xx: LoadBalancerMetrics) ------------------------------------

    def metric_client_requests(self) -> cloudwatch.MathExpression:
        """Client requests per minute: those forwarded to a server plus those refused for want of one."""
        return cloudwatch.MathExpression(
            expression="FILL(forwarded, 0) + FILL(refused, 0)",
            using_metrics={"forwarded": self.metric_requests(), "refused": self.metric_load_balancer_5xx()},
            label="client requests",
            period=ONE_MINUTE,
        )

    def metric_healthy_hosts(self) -> cloudwatch.Metric:
        return self.target_group.metrics.healthy_host_count(period=ONE_MINUTE, statistic="Minimum")

    def metric_unhealthy_hosts(self) -> cloudwatch.Metric:
        return self.target_group.metrics.unhealthy_host_count(period=ONE_MINUTE, statistic="Maximum")

    def metric_tasks_not_running(self) -> cloudwatch.MathExpression:
        """Desired minus running tasks (Container Insights): tasks waiting for GPU capacity."""
        insights = {"ClusterName": self.cluster.cluster_name, "ServiceName": self.service.service_name}

        def task_count(name: str, statistic: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(
                namespace="ECS/ContainerInsights", metric_name=name, dimensions_map=insights, statistic=statistic, period=FIVE_MINUTES
            )

        return cloudwatch.MathExpression(
            expression="desired - running",
            using_metrics={"desired": task_count("DesiredTaskCount", "Minimum"), "running": task_count("RunningTaskCount", "Maximum")},
            label="tasks not running",
            period=FIVE_MINUTES,
        )

    def metric_instances_in_service(self) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace="AWS/AutoScaling",
            metric_name="GroupInServiceInstances",
            dimensions_map={"AutoScalingGroupName": self.auto_scaling_group.auto_scaling_group_name},
            statistic="Maximum",
            period=ONE_MINUTE,
        )

    def enable_deployment_alarms(self, alarm_names: list[str]) -> None:
        """Roll a deployment back when any of these alarms fires while it is in progress."""
        self.service.enable_deployment_alarms(alarm_names, behavior=ecs.AlarmBehavior.ROLLBACK_ON_ALARM)

