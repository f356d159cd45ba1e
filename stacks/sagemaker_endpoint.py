"""One model served by the same vLLM image on a SageMaker real-time endpoint.

Sizes and timeouts come from the plan: the `ml.*` instance, startup health-check and
model-download timeouts (the plan's health-check grace), autoscaling bounds and targets,
and the drain time old instances keep after a blue/green switch.

`min_capacity` 0 takes another shape, since a production variant cannot run zero instances: the
model is an inference component on an endpoint whose managed instance scaling may reach zero; the
component scales to zero copies after the plan's idle period, and a request that finds no copy
(`NoCapacityInvocationFailures`) brings one back. `min_capacity` >= 1 keeps the plain variant, so
running fleets see no change in their templates.
"""

from __future__ import annotations

from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from llmfleet.model_store.contract.container import container_env
from llmfleet.model_store.contract.inference_components import inference_component_name, TAG_INFERENCE_COMPONENT
from llmfleet.model_store.contract.plan import DeploymentPlan
from llmfleet.model_store.store.store import StoreLocation
from llmfleet.stacks.compliance import acknowledge, checkov_skip, nag_rendered
from llmfleet.stacks.config import StackConfigError
from llmfleet.model_store.contract.telemetry import REQUESTS_WAITING
from llmfleet.stacks.metrics import ONE_MINUTE, fleet_metric
from llmfleet.stacks.scaling import scale_to_zero_when_idle, wake_on_refused_requests
from llmfleet.stacks.store import ServingImage, grant_serving_access
from llmfleet.model_store.contract.targets import SAGEMAKER

TARGET = SAGEMAKER.name  # the container's target and the Target dimension of its metrics
VARIANT = "AllTraffic"
# SageMaker accepts 60..3600 s for both container timeouts (CreateEndpointConfig API, 2026-11).
TIMEOUT_RANGE = (60, 3600)
# After a blue/green switch the new fleet takes all traffic while the rollback alarms watch it.
BAKE_SECONDS = 600
ENDPOINT_NAME_MAX = 63
# Leave room in the instance's memory for SageMaker's own agents beside the component's container.
COMPONENT_MEMORY_SHARE = 0.9
# One copy of the model is one server: a copy takes every GPU of its instance.
COPIES_PER_STEP = 1


@dataclass(frozen=True)
class SageMakerEndpointProps:
    """plan: the model's serving plan (ml.* instance, timeouts, scaling). vpc, store, key, image:
    the fleet's shared network, model store, KMS key and serving image. No optional fields."""

    plan: DeploymentPlan
    vpc: ec2.IVpc
    store: StoreLocation
    key: kms.IKey
    image: ServingImage

    def __post_init__(self) -> None:
        plan = self.plan
        where = f"SageMakerEndpointProps for model {plan.model_name!r}"
        if TARGET not in plan.targets or plan.sagemaker_instance_type is None:
            raise StackConfigError(f"{where}: plan targets {plan.targets} with no SageMaker instance type")
        low, high = TIMEOUT_RANGE
        if not low <= plan.timing.startup_grace_seconds <= high:
            raise StackConfigError(
                f"{where}: startup_grace_seconds {plan.timing.startup_grace_seconds}; SageMaker allows {low}..{high}"
            )
        if len(endpoint_name(plan)) > ENDPOINT_NAME_MAX:
            raise StackConfigError(
                f"{where}: endpoint name {endpoint_name(plan)!r} exceeds {ENDPOINT_NAME_MAX} characters; "
                f"shorten the fleet, stage or model name"
            )


def endpoint_name(plan: DeploymentPlan) -> str:
    """Fixed so rollback alarms (which the endpoint names) can watch it; clients call it by this name."""
    return f"{plan.fleet}-{plan.stage}-{plan.model_name}"


def model_data_uri(plan: DeploymentPlan, store: StoreLocation) -> str:
    """The model revision in the store (`llmfleet model upload` layout): SageMaker copies it, uncompressed,
    to /opt/ml/model before the container starts."""
    return f"s3://{store.bucket}/{store.key('models', plan.model_name, plan.revision)}/"


class SageMakerEndpointConstruct(Construct):
    """Execution role, model (uncompressed S3 data, VPC), endpoint config, endpoint, rollback alarms, autoscaling."""

    def __init__(self, scope: Construct, id: str, props: SageMakerEndpointProps) -> None:
        super().__init__(scope, id)
        self.plan = props.plan
        self.endpoint_name = endpoint_name(props.plan)
        # min_capacity 0: the model is an inference component that may scale to zero copies (see module doc).
        self.inference_component_name = (
            inference_component_name(self.endpoint_name) if props.plan.autoscaling.min_capacity == 0 else None
        )
        # Named literally: the endpoint's rollback configuration refers to alarms by name.
        self.rollback_alarm_names = [f"{self.endpoint_name}-rollback-5xx"]
        self.rollback_alarms = self._rollback_alarms()
        self.role = self._execution_role(props)  # the model's store prefixes read-only, its logs, metrics, VPC interfaces
        self.security_group = ec2.SecurityGroup(
            self, "SecurityGroup", vpc=props.vpc, description=f"SageMaker endpoint of {props.plan.model_name} (no ingress)"
        )
        self.model = self._model(props)  # the serving image on the uncompressed revision, inside the VPC
        if self.inference_component_name is None:
            self.endpoint_config = self._endpoint_config(props)  # one variant with the plan's instance and timeouts
            self.endpoint = self._endpoint()  # blue/green updates that roll back on the alarms
            self._autoscaling()
        else:
            self.endpoint_config = self._managed_endpoint_config(props)  # instances that managed scaling may take to zero
            self.endpoint = self._endpoint(blue_green=False)  # the component's rolling updates roll back instead
            self.inference_component = self._inference_component()  # the model on every GPU of an instance
            self._component_autoscaling()  # copies follow load, go to zero when idle, and wake on a refused request

    def _rollback_alarms(self) -> list[cloudwatch.Alarm]:
        plan = self.plan
        return [
            cloudwatch.Alarm(
                self,
                "Rollback5xx",
                alarm_name=self.rollback_alarm_names[0],
                alarm_description=f"{plan.model_name}: 5xx from the new "
                + ("copies during a rolling update" if self.inference_component_name else "fleet during a blue/green update")
                + " rolls it back",
                metric=self.metric_server_5xx(),
                threshold=5,
                evaluation_periods=2,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
        ]

    def _execution_role(self, props: SageMakerEndpointProps) -> iam.Role:
        plan, stack = self.plan, cdk.Stack.of(self)
        role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"))
        grant_serving_access(role, plan, props.store, props.key, TARGET)
        props.image.grant_pull(role)
        log_groups = stack.format_arn(
            service="logs",
            resource="log-group",
            resource_name=f"/aws/sagemaker/Endpoints/{self.endpoint_name}:*",
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                resources=[log_groups],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": ["/aws/sagemaker/Endpoints", "AWS/SageMaker"]}},
            )
        )
        # SageMaker attaches the endpoint's network interfaces in the VPC on the role's behalf.
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=[
                    "ec2:CreateNetworkInterface",
                    "ec2:CreateNetworkInterfacePermission",
                    "ec2:DeleteNetworkInterface",
                    "ec2:DeleteNetworkInterfacePermission",
                    "ec2:DescribeNetworkInterfaces",
                    "ec2:DescribeVpcs",
                    "ec2:DescribeDhcpOptions",
                    "ec2:DescribeSubnets",
                    "ec2:DescribeSecurityGroups",
                ],
                resources=["*"],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:DescribeAlarms"],
                resources=[
                    stack.format_arn(
                        service="cloudwatch", resource="alarm", resource_name=name, arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME
                    )
                    for name in self.rollback_alarm_names
                ],
            )
        )
        acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            "ecr:GetAuthorizationToken, cloudwatch:PutMetricData (limited by a namespace condition) and the VPC "
            "network-interface actions SageMaker needs do not support resource scoping",
        )
        for check_id in ("CKV_AWS_109", "CKV_AWS_111"):
            checkov_skip(
                role.node.find_child("DefaultPolicy"),
                check_id,
                "ecr:GetAuthorizationToken, cloudwatch:PutMetricData (namespace condition) and SageMaker's VPC "
                "network-interface actions take no resource scoping",
            )
        acknowledge(
            role,
            f"AwsSolutions-IAM5[Resource::{nag_rendered(log_groups)}]",
            "the endpoint's own log group and its streams",
        )
        return role

    def _model(self, props: SageMakerEndpointProps) -> sagemaker.CfnModel:
        plan = self.plan
        private = props.vpc.select_subnets(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        model = sagemaker.CfnModel(
            self,
            "Model",
            execution_role_arn=self.role.role_arn,
            primary_container=sagemaker.CfnModel.ContainerDefinitionProperty(
                image=props.image.uri,
                environment=container_env(plan, props.store.uri, TARGET),
                model_data_source=sagemaker.CfnModel.ModelDataSourceProperty(
                    s3_data_source=sagemaker.CfnModel.S3DataSourceProperty(
                        s3_uri=model_data_uri(plan, props.store), s3_data_type="S3Prefix", compression_type="None"
                    )
                ),
            ),
            vpc_config=sagemaker.CfnModel.VpcConfigProperty(
                security_group_ids=[self.security_group.security_group_id], subnets=private.subnet_ids
            ),
        )
        # CreateModel checks the image pull rights: the role's policy must exist first.
        model.add_resource_dependency(self.role.node.find_child("DefaultPolicy").node.default_child)
        checkov_skip(
            model,
            "CKV_AWS_370",
            "the container polls the adapter registry in S3 at run time; network isolation would cut it off",
        )
        return model

    def _endpoint_config(self, props: SageMakerEndpointProps) -> sagemaker.CfnEndpointConfig:
        plan, grace = self.plan, self.plan.timing.startup_grace_seconds
        # Instances with local NVMe encrypt it in hardware and SageMaker rejects a KmsKeyId for them.
        local_storage = plan.instance_nvme_gb > 0
        endpoint_config = sagemaker.CfnEndpointConfig(
            self,
            "EndpointConfig",
            kms_key_id=None if local_storage else props.key.key_arn,
            production_variants=[
                sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                    variant_name=VARIANT,
                    model_name=self.model.attr_model_name,
                    instance_type=plan.sagemaker_instance_type,
                    initial_instance_count=max(1, plan.autoscaling.min_capacity),
                    initial_variant_weight=1,
                    container_startup_health_check_timeout_in_seconds=grace,
                    model_data_download_timeout_in_seconds=grace,
                )
            ],
        )
        if local_storage:
            self._acknowledge_local_storage(endpoint_config)
        return endpoint_config

    def _acknowledge_local_storage(self, endpoint_config: sagemaker.CfnEndpointConfig) -> None:
        reason = (
            f"{self.plan.sagemaker_instance_type} has local NVMe storage, encrypted by the instance; SageMaker rejects "
            f"a KmsKeyId for such instances"
        )
        for finding in ("AwsSolutions-SM2", "NIST.800.53.R5-SageMakerEndpointConfigurationKMSKeyConfigured"):
            acknowledge(endpoint_config, finding, reason)

    def _endpoint(self, blue_green: bool = True) -> sagemaker.CfnEndpoint:
        plan, grace = self.plan, self.plan.timing.startup_grace_seconds
        endpoint = sagemaker.CfnEndpoint(
            self,
            "Endpoint",
            endpoint_name=self.endpoint_name,
            endpoint_config_name=self.endpoint_config.attr_endpoint_config_name,
            deployment_config=None if not blue_green else sagemaker.CfnEndpoint.DeploymentConfigProperty(
                blue_green_update_policy=sagemaker.CfnEndpoint.BlueGreenUpdatePolicyProperty(
                    traffic_routing_configuration=sagemaker.CfnEndpoint.TrafficRoutingConfigProperty(
                        type="ALL_AT_ONCE", wait_interval_in_seconds=BAKE_SECONDS
                    ),
                    # Old instances finish their in-flight requests before they go.
                    termination_wait_in_seconds=plan.timing.drain_seconds,
                    maximum_execution_timeout_in_seconds=min(14400, 2 * grace + BAKE_SECONDS + plan.timing.drain_seconds),
                ),
                auto_rollback_configuration=sagemaker.CfnEndpoint.AutoRollbackConfigProperty(
                    alarms=[sagemaker.CfnEndpoint.AlarmProperty(alarm_name=name) for name in self.rollback_alarm_names]
                ),
            ),
        )
        if self.inference_component_name is not None:  # callers find the component to name by this tag
            cdk.Tags.of(endpoint).add(TAG_INFERENCE_COMPONENT, self.inference_component_name)
        return endpoint

    def _managed_endpoint_config(self, props: SageMakerEndpointProps) -> sagemaker.CfnEndpointConfig:
        """No model on the variant: its instances host the component, and managed scaling adds and ends them."""
        plan = self.plan
        private = props.vpc.select_subnets(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        local_storage = plan.instance_nvme_gb > 0
        endpoint_config = sagemaker.CfnEndpointConfig(
            self,
            "EndpointConfig",
            kms_key_id=None if local_storage else props.key.key_arn,
            # An endpoint of components deploys them with the config's role and network, not the model's.
            execution_role_arn=self.role.role_arn,
            vpc_config=sagemaker.CfnEndpointConfig.VpcConfigProperty(
                security_group_ids=[self.security_group.security_group_id], subnets=private.subnet_ids
            ),
            production_variants=[
                sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                    variant_name=VARIANT,
                    instance_type=plan.sagemaker_instance_type,
                    initial_instance_count=1,
                    managed_instance_scaling=sagemaker.CfnEndpointConfig.ManagedInstanceScalingProperty(
                        status="ENABLED", min_instance_count=0, max_instance_count=plan.autoscaling.max_capacity
                    ),
                    routing_config=sagemaker.CfnEndpointConfig.RoutingConfigProperty(routing_strategy="LEAST_OUTSTANDING_REQUESTS"),
                )
            ],
        )
        endpoint_config.add_resource_dependency(self.role.node.find_child("DefaultPolicy").node.default_child)
        if local_storage:
            self._acknowledge_local_storage(endpoint_config)
        return endpoint_config

    def _inference_component(self) -> sagemaker.CfnInferenceComponent:
        plan, grace = self.plan, self.plan.timing.startup_grace_seconds
        memory_mib = int(plan.instance_memory_gib * 1024 * COMPONENT_MEMORY_SHARE)
        return sagemaker.CfnInferenceComponent(
            self,
            "InferenceComponent",
            inference_component_name=self.inference_component_name,
            endpoint_name=self.endpoint.attr_endpoint_name,
            variant_name=VARIANT,
            specification=sagemaker.CfnInferenceComponent.InferenceComponentSpecificationProperty(
                model_name=self.model.attr_model_name,
                compute_resource_requirements=sagemaker.CfnInferenceComponent.InferenceComponentComputeResourceRequirementsProperty(
                    number_of_accelerator_devices_required=plan.gpus_per_instance,
                    min_memory_required_in_mb=memory_mib,
                ),
                startup_parameters=sagemaker.CfnInferenceComponent.InferenceComponentStartupParametersProperty(
                    container_startup_health_check_timeout_in_seconds=grace,
                    model_data_download_timeout_in_seconds=grace,
                ),
            ),
            # One copy at deploy time proves the model starts; the idle alarm takes it to zero later.
            runtime_config=sagemaker.CfnInferenceComponent.InferenceComponentRuntimeConfigProperty(copy_count=1),
            deployment_config=sagemaker.CfnInferenceComponent.InferenceComponentDeploymentConfigProperty(
                rolling_update_policy=sagemaker.CfnInferenceComponent.InferenceComponentRollingUpdatePolicyProperty(
                    maximum_batch_size=sagemaker.CfnInferenceComponent.InferenceComponentCapacitySizeProperty(
                        type="COPY_COUNT", value=COPIES_PER_STEP
                    ),
                    wait_interval_in_seconds=BAKE_SECONDS,
                    maximum_execution_timeout_in_seconds=min(14400, 2 * grace + BAKE_SECONDS + plan.timing.drain_seconds),
                ),
                auto_rollback_configuration=sagemaker.CfnInferenceComponent.AutoRollbackConfigurationProperty(
                    alarms=[sagemaker.CfnInferenceComponent.AlarmProperty(alarm_name=name) for name in self.rollback_alarm_names]
                ),
            ),
        )

    def variant_metric(self, name: str, statistic: str) -> cloudwatch.Metric:
        """One of SageMaker's invocation metrics (AWS/SageMaker), per minute: the variant's, or the
        inference component's, which is where an endpoint of components reports them."""
        return cloudwatch.Metric(
            namespace="AWS/SageMaker", metric_name=name, dimensions_map=self._dimensions(), statistic=statistic, period=ONE_MINUTE
        )

    def _dimensions(self) -> dict[str, str]:
        """What SageMaker's metrics of this model are filed under: its component, else its variant."""
        if self.inference_component_name:
            return {"InferenceComponentName": self.inference_component_name}
        return {"EndpointName": self.endpoint_name, "VariantName": VARIANT}

    def metric_invocations(self) -> cloudwatch.Metric:
        return self.variant_metric("Invocations", "Sum")

    def metric_invocation_5xx_errors(self) -> cloudwatch.Metric:
        return self.variant_metric("Invocation5XXErrors", "Sum")

    def metric_server_5xx(self) -> cloudwatch.IMetric:
        """5xx the servers answered, per minute: on an endpoint of components, less the requests refused
        while it had no copy, so a model at zero raises no error alarm."""
        if self.inference_component_name is None:
            return self.metric_invocation_5xx_errors()
        return cloudwatch.MathExpression(
            expression="FILL(all_5xx, 0) - FILL(no_copy, 0)",
            using_metrics={"all_5xx": self.metric_invocation_5xx_errors(), "no_copy": self.metric_no_capacity_failures()},
            label="server 5xx",
            period=ONE_MINUTE,
        )

    def metric_model_latency(self) -> cloudwatch.Metric:
        """The container's time per invocation (microseconds), p90."""
        return self.variant_metric("ModelLatency", "p90")

    def metric_no_capacity_failures(self) -> cloudwatch.Metric:
        """Requests refused because the component had no copy (it was at zero), per minute."""
        return self.variant_metric("NoCapacityInvocationFailures", "Sum")

    def metric_gpu_utilization(self) -> cloudwatch.Metric:
        """GPU utilization, which SageMaker publishes under its own namespace (per component on an endpoint of components)."""
        return cloudwatch.Metric(
            namespace="/aws/sagemaker/InferenceComponents" if self.inference_component_name else "/aws/sagemaker/Endpoints",
            metric_name="GPUUtilization",
            dimensions_map=self._dimensions(),
            statistic="Average",
            period=ONE_MINUTE,
        )

    def _scalable_target(self, resource_id: str, dimension: str, min_capacity: int) -> appscaling.ScalableTarget:
        return appscaling.ScalableTarget(
            self,
            "Scaling",
            service_namespace=appscaling.ServiceNamespace.SAGEMAKER,
            resource_id=resource_id,
            scalable_dimension=dimension,
            min_capacity=min_capacity,
            max_capacity=self.plan.autoscaling.max_capacity,
            # Application Auto Scaling's own service-linked role (as CDK uses for ECS services),
            # not a new role without permissions.
            role=iam.Role.from_role_arn(
                self,
                "ScalingRole",
                cdk.Stack.of(self).format_arn(
                    service="iam",
                    region="",
                    resource="role/aws-service-role/sagemaker.application-autoscaling.amazonaws.com",
                    resource_name="AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint",
                ),
            ),
        )

    def _track_load(self, per_server: str, predefined: appscaling.PredefinedMetric) -> None:
        """Target tracking on invocations per server and on the servers' own queue depth."""
        scaling_plan = self.plan.autoscaling
        cooldowns = {
            "scale_in_cooldown": cdk.Duration.seconds(scaling_plan.scale_in_cooldown_seconds),
            "scale_out_cooldown": cdk.Duration.seconds(scaling_plan.scale_out_cooldown_seconds),
        }
        self.scalable_target.scale_to_track_metric(
            per_server, target_value=scaling_plan.target_requests_per_minute, predefined_metric=predefined, **cooldowns
        )
        self.scalable_target.scale_to_track_metric(
            "QueueDepth",
            target_value=scaling_plan.target_queue_depth,
            custom_metric=fleet_metric(self.plan, REQUESTS_WAITING, TARGET),
            **cooldowns,
        )

    def _autoscaling(self) -> None:
        # A real-time variant cannot run zero instances.
        self.scalable_target = self._scalable_target(
            f"endpoint/{self.endpoint_name}/variant/{VARIANT}",
            "sagemaker:variant:DesiredInstanceCount",
            max(1, self.plan.autoscaling.min_capacity),
        )
        self.scalable_target.node.add_dependency(self.endpoint)
        self._track_load("InvocationsPerInstance", appscaling.PredefinedMetric.SAGEMAKER_VARIANT_INVOCATIONS_PER_INSTANCE)

    def _component_autoscaling(self) -> None:
        """Copies of the component, 0..max: one copy per instance, which managed instance scaling follows."""
        where = f"{self.plan.model_name} on SageMaker"
        self.scalable_target = self._scalable_target(
            f"inference-component/{self.inference_component_name}", "sagemaker:inference-component:DesiredCopyCount", 0
        )
        self.scalable_target.node.add_dependency(self.inference_component)
        self._track_load("InvocationsPerCopy", appscaling.PredefinedMetric.SAGEMAKER_INFERENCE_COMPONENT_INVOCATIONS_PER_COPY)
        refused = self.metric_no_capacity_failures()
        wake_seconds = self.plan.autoscaling.wake_seconds[TARGET]
        self.wake_alarm = wake_on_refused_requests(self, self.scalable_target, refused, where, wake_seconds)
        activity = cloudwatch.MathExpression(
            expression="FILL(invocations, 0) + FILL(refused, 0)",
            using_metrics={"invocations": self.metric_invocations(), "refused": refused},
            label="invocations, served or refused",
            period=ONE_MINUTE,
        )
        self.idle_alarm = scale_to_zero_when_idle(
            self,
            self.scalable_target,
            activity,
            self.plan.autoscaling.idle_minutes,
            f"{where} (managed instance scaling then ends the instances)",
        )
