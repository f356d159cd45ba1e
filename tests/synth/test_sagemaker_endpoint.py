"""The SageMaker endpoint of every SageMaker-targeted model follows its plan and rolls back on alarms."""

from __future__ import annotations

import pytest

from llmfleet.containers.entrypoint.settings import settings_from_env
from llmfleet.model_store.contract.plan import ServingPlan
from llmfleet.model_store.store.store import StoreLocation
from llmfleet.stacks.config import StackConfigError
from llmfleet.model_store.contract.inference_components import inference_component_name, TAG_INFERENCE_COMPONENT
from llmfleet.stacks.sagemaker_endpoint import SageMakerEndpointProps, endpoint_name
from tests.synth.conftest import Synthesized, assert_serving_role_grants, only


def sagemaker_plans(synth: Synthesized) -> list[ServingPlan]:
    plans = [p for p in synth.fleet.plans if "sagemaker" in p.targets]
    assert plans, "the example fleet must exercise the SageMaker path"
    return plans


def variant_plans(synth: Synthesized) -> list[ServingPlan]:
    """Models that keep at least one instance: a plain production variant, as before scale to zero."""
    plans = [p for p in sagemaker_plans(synth) if p.autoscaling.min_capacity >= 1]
    assert plans, "the example fleet must keep a SageMaker model always up"
    return plans


def component_plans(synth: Synthesized) -> list[ServingPlan]:
    """Models that may scale to zero: an inference component on a managed-scaling endpoint."""
    plans = [p for p in sagemaker_plans(synth) if p.autoscaling.min_capacity == 0]
    assert plans, "the example fleet must scale a SageMaker model to zero"
    return plans


def test_model_reads_uncompressed_weights_of_the_revision_and_runs_in_the_vpc(secure_fleet: Synthesized) -> None:
    for plan in sagemaker_plans(secure_fleet):
        model = only(secure_fleet.model_template(plan.model_name).find_resources("AWS::SageMaker::Model"))
        container = model["PrimaryContainer"]
        assert container["ModelDataSource"]["S3DataSource"] == {
            "S3Uri": f"s3://llmfleet-store/models/{plan.model_name}/{plan.revision}/",
            "S3DataType": "S3Prefix",
            "CompressionType": "None",
        }
        assert ServingPlan.from_json(container["Environment"]["LLMFLEET_PLAN"]) == plan
        assert container["Environment"]["LLMFLEET_TARGET"] == "sagemaker"
        settings = settings_from_env(container["Environment"])  # what the entrypoint will read
        assert (settings.plan, settings.target, settings.port) == (plan, "sagemaker", 8080)
        assert len(model["VpcConfig"]["Subnets"]) == 2 and model["VpcConfig"]["SecurityGroupIds"]


def test_endpoint_config_uses_the_planned_instance_and_timeouts(secure_fleet: Synthesized) -> None:
    for plan in variant_plans(secure_fleet):
        config = only(secure_fleet.model_template(plan.model_name).find_resources("AWS::SageMaker::EndpointConfig"))
        (variant,) = config["ProductionVariants"]
        assert variant["InstanceType"] == plan.sagemaker_instance_type
        assert variant["ContainerStartupHealthCheckTimeoutInSeconds"] == plan.timing.startup_grace_seconds
        assert variant["ModelDataDownloadTimeoutInSeconds"] == plan.timing.startup_grace_seconds
        assert variant["InitialInstanceCount"] == max(1, plan.autoscaling.min_capacity)
        # Instance-store NVMe is encrypted by the instance; SageMaker refuses a KmsKeyId for it.
        assert ("KmsKeyId" in config) == (plan.instance_nvme_gb == 0)


def test_blue_green_update_rolls_back_on_its_alarm(secure_fleet: Synthesized) -> None:
    for plan in variant_plans(secure_fleet):
        synthesized = secure_fleet.model_template(plan.model_name)
        endpoint = only(synthesized.find_resources("AWS::SageMaker::Endpoint"))
        assert endpoint["EndpointName"] == endpoint_name(plan)
        policy = endpoint["DeploymentConfig"]["BlueGreenUpdatePolicy"]
        assert policy["TerminationWaitInSeconds"] == plan.timing.drain_seconds
        assert policy["TrafficRoutingConfiguration"]["Type"] == "ALL_AT_ONCE"
        (alarm,) = endpoint["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"]
        rollback = synthesized.find_resources("AWS::CloudWatch::Alarm", {"Properties": {"AlarmName": alarm["AlarmName"]}})
        watched = only(rollback)
        assert watched["MetricName"] == "Invocation5XXErrors"
        assert {"Name": "EndpointName", "Value": endpoint_name(plan)} in watched["Dimensions"]


def test_variant_autoscaling_follows_the_plan(secure_fleet: Synthesized) -> None:
    for plan in variant_plans(secure_fleet):
        synthesized = secure_fleet.model_template(plan.model_name)
        targets = synthesized.find_resources(
            "AWS::ApplicationAutoScaling::ScalableTarget", {"Properties": {"ServiceNamespace": "sagemaker"}}
        )
        target = only(targets)
        assert target["ResourceId"] == f"endpoint/{endpoint_name(plan)}/variant/AllTraffic"
        assert "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint" in str(target["RoleARN"])
        assert (target["MinCapacity"], target["MaxCapacity"]) == (
            max(1, plan.autoscaling.min_capacity),
            plan.autoscaling.max_capacity,
        )
        values = sorted(
            p["Properties"]["TargetTrackingScalingPolicyConfiguration"]["TargetValue"]
            for p in synthesized.find_resources("AWS::ApplicationAutoScaling::ScalingPolicy").values()
            if p["Properties"]["ScalingTargetId"] == {"Ref": next(iter(targets))}
        )
        assert values == sorted([plan.autoscaling.target_queue_depth, plan.autoscaling.target_requests_per_minute])


def test_a_model_that_may_scale_to_zero_is_an_inference_component_on_a_managed_scaling_endpoint(
    secure_fleet: Synthesized,
) -> None:
    for plan in component_plans(secure_fleet):
        synthesized = secure_fleet.model_template(plan.model_name)
        config = only(synthesized.find_resources("AWS::SageMaker::EndpointConfig"))
        (variant,) = config["ProductionVariants"]
        assert "ModelName" not in variant  # the component brings the model
        assert variant["InstanceType"] == plan.sagemaker_instance_type
        assert variant["ManagedInstanceScaling"] == {
            "Status": "ENABLED",
            "MinInstanceCount": 0,
            "MaxInstanceCount": plan.autoscaling.max_capacity,
        }
        assert variant["RoutingConfig"] == {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"}
        role_id = only(synthesized.find_resources("AWS::SageMaker::Model"))["ExecutionRoleArn"]["Fn::GetAtt"][0]
        assert config["ExecutionRoleArn"] == {"Fn::GetAtt": [role_id, "Arn"]}
        assert len(config["VpcConfig"]["Subnets"]) == 2 and config["VpcConfig"]["SecurityGroupIds"]

        component = only(synthesized.find_resources("AWS::SageMaker::InferenceComponent"))
        name = inference_component_name(endpoint_name(plan))
        assert component["InferenceComponentName"] == name
        assert component["VariantName"] == variant["VariantName"]
        specification = component["Specification"]
        requirements = specification["ComputeResourceRequirements"]
        assert requirements["NumberOfAcceleratorDevicesRequired"] == plan.gpus_per_instance
        assert 0 < requirements["MinMemoryRequiredInMb"] < plan.instance_memory_gib * 1024
        assert specification["StartupParameters"] == {
            "ContainerStartupHealthCheckTimeoutInSeconds": plan.timing.startup_grace_seconds,
            "ModelDataDownloadTimeoutInSeconds": plan.timing.startup_grace_seconds,
        }
        assert component["RuntimeConfig"] == {"CopyCount": 1}

        # Updates roll copy by copy and roll back on the same alarm a variant's blue/green update uses.
        endpoint = only(synthesized.find_resources("AWS::SageMaker::Endpoint"))
        assert "DeploymentConfig" not in endpoint
        (alarm,) = component["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"]
        rollback = only(synthesized.find_resources("AWS::CloudWatch::Alarm", {"Properties": {"AlarmName": alarm["AlarmName"]}}))
        # Requests refused while at zero are not the new servers' errors.
        assert any(m.get("Expression") == "FILL(all_5xx, 0) - FILL(no_copy, 0)" for m in rollback["Metrics"])
        # Callers find the component to name by the endpoint's tag.
        assert {"Key": TAG_INFERENCE_COMPONENT, "Value": name} in endpoint["Tags"]


def test_component_copies_go_to_zero_when_idle_and_come_back_on_a_refused_request(secure_fleet: Synthesized) -> None:
    for plan in component_plans(secure_fleet):
        synthesized = secure_fleet.model_template(plan.model_name)
        name = inference_component_name(endpoint_name(plan))
        targets = synthesized.find_resources(
            "AWS::ApplicationAutoScaling::ScalableTarget", {"Properties": {"ServiceNamespace": "sagemaker"}}
        )
        target = only(targets)
        assert target["ResourceId"] == f"inference-component/{name}"
        assert target["ScalableDimension"] == "sagemaker:inference-component:DesiredCopyCount"
        assert (target["MinCapacity"], target["MaxCapacity"]) == (0, plan.autoscaling.max_capacity)
        policies = {
            key: p["Properties"]
            for key, p in synthesized.find_resources("AWS::ApplicationAutoScaling::ScalingPolicy").items()
            if p["Properties"]["ScalingTargetId"] == {"Ref": next(iter(targets))}
        }
        tracked = sorted(
            p["TargetTrackingScalingPolicyConfiguration"].get("PredefinedMetricSpecification", {}).get("PredefinedMetricType", "queue")
            for p in policies.values()
            if p["PolicyType"] == "TargetTrackingScaling"
        )
        assert tracked == ["SageMakerInferenceComponentInvocationsPerCopy", "queue"]
        alarms = synthesized.find_resources("AWS::CloudWatch::Alarm")

        def alarm_of(policy: dict) -> dict:
            key = next(k for k, p in policies.items() if p is policy)
            return only({k: a for k, a in alarms.items() if a["Properties"].get("AlarmActions") == [{"Ref": key}]})

        (wake,) = [p for p in policies.values() if p.get("StepScalingPolicyConfiguration", {}).get("AdjustmentType") == "ChangeInCapacity"]
        assert wake["StepScalingPolicyConfiguration"]["StepAdjustments"] == [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}]
        # Refusals go on while the woken copy starts: no second copy for them before it could answer.
        assert wake["StepScalingPolicyConfiguration"]["Cooldown"] == plan.autoscaling.wake_seconds["sagemaker"]
        refused = alarm_of(wake)
        assert (refused["MetricName"], refused["Namespace"], refused["Threshold"]) == ("NoCapacityInvocationFailures", "AWS/SageMaker", 1)
        assert refused["Dimensions"] == [{"Name": "InferenceComponentName", "Value": name}]

        (idle,) = [p for p in policies.values() if p.get("StepScalingPolicyConfiguration", {}).get("AdjustmentType") == "ExactCapacity"]
        assert idle["StepScalingPolicyConfiguration"]["StepAdjustments"] == [{"MetricIntervalUpperBound": 0, "ScalingAdjustment": 0}]
        quiet = alarm_of(idle)
        assert quiet["EvaluationPeriods"] == quiet["DatapointsToAlarm"] == plan.autoscaling.idle_minutes
        assert (quiet["ComparisonOperator"], quiet["Threshold"]) == ("LessThanOrEqualToThreshold", 0)
        assert quiet["TreatMissingData"] == "breaching"  # no datapoint: no invocation that minute
        # A refused request counts as activity, so a waking component is not stopped again.
        assert any(m.get("Expression") == "FILL(invocations, 0) + FILL(refused, 0)" for m in quiet["Metrics"])


def test_variant_scales_on_its_own_queue_not_the_ecs_services(secure_fleet: Synthesized) -> None:
    plans = sagemaker_plans(secure_fleet)
    assert any("ecs" in p.targets for p in plans), "the example fleet must serve a model on both targets"
    for plan in plans:
        synthesized = secure_fleet.model_template(plan.model_name)
        (target_id,) = synthesized.find_resources(
            "AWS::ApplicationAutoScaling::ScalableTarget", {"Properties": {"ServiceNamespace": "sagemaker"}}
        )
        (queue,) = [
            p["Properties"]["TargetTrackingScalingPolicyConfiguration"]["CustomizedMetricSpecification"]
            for p in synthesized.find_resources("AWS::ApplicationAutoScaling::ScalingPolicy").values()
            if p["Properties"]["ScalingTargetId"] == {"Ref": target_id}
            and "CustomizedMetricSpecification" in p["Properties"].get("TargetTrackingScalingPolicyConfiguration", {})
        ]
        assert queue == {
            "Namespace": "LLMFleet",
            "MetricName": "RequestsWaiting",
            "Dimensions": [
                {"Name": "Model", "Value": plan.model_name},
                {"Name": "Stage", "Value": plan.stage},
                {"Name": "Target", "Value": "sagemaker"},
            ],
            "Statistic": "Average",
        }


def test_execution_role_reads_only_the_models_prefixes_and_writes_only_its_compile_cache(secure_fleet: Synthesized) -> None:
    for plan in sagemaker_plans(secure_fleet):
        synthesized = secure_fleet.model_template(plan.model_name)
        model = only(synthesized.find_resources("AWS::SageMaker::Model"))
        role_id = model["ExecutionRoleArn"]["Fn::GetAtt"][0]
        assert_serving_role_grants(synthesized, role_id, plan.model_name, plan.stage, "sagemaker")


def test_props_refuse_a_plan_without_a_sagemaker_target(secure_fleet: Synthesized) -> None:
    plan = next(p for p in secure_fleet.fleet.plans if "sagemaker" not in p.targets)
    with pytest.raises(StackConfigError, match=f"model '{plan.model_name}'.*SageMaker"):
        SageMakerEndpointProps(plan=plan, vpc=None, store=StoreLocation("b"), key=None, image=None)  # type: ignore[arg-type]


def test_props_refuse_an_endpoint_name_sagemaker_would_reject(secure_fleet: Synthesized) -> None:
    plan = sagemaker_plans(secure_fleet)[0].model_copy(update={"fleet": "f" * 40, "model_name": "m" * 30})
    with pytest.raises(StackConfigError, match="exceeds 63 characters"):
        SageMakerEndpointProps(plan=plan, vpc=None, store=StoreLocation("b"), key=None, image=None)  # type: ignore[arg-type]
