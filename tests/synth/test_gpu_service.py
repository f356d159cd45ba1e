"""The ECS GPU service of every ECS-targeted model is sized and guarded as its plan says."""

from __future__ import annotations

import json

import pytest

from llmfleet.containers.entrypoint.settings import settings_from_env
from llmfleet.model_store.contract.container import VLLM_API_KEY_ENV
from llmfleet.model_store.contract.plan import ServingPlan
from llmfleet.model_store.store.store import StoreLocation
from llmfleet.stacks.config import StackConfigError
from llmfleet.model_store.contract.front_door import forwarded_paths, VLLM_ADMIN_PATHS
from llmfleet.stacks.gpu_service import CONTAINER_PORT, WRITABLE_PATHS, GpuServiceProps
from tests.synth.conftest import CERTIFICATE_ARN, Synthesized, as_list, assert_serving_role_grants, only


def ecs_plans(synth: Synthesized) -> list[ServingPlan]:
    plans = [p for p in synth.fleet.plans if "ecs" in p.targets]
    assert plans, "the example fleet must exercise the ECS path"
    return plans


def container(synth: Synthesized, plan: ServingPlan) -> dict:
    task = only(synth.model_template(plan.model_name).find_resources("AWS::ECS::TaskDefinition"))
    (definition,) = task["ContainerDefinitions"]
    return definition


def test_task_takes_gpus_memory_and_stop_timeout_from_the_plan(secure_fleet: Synthesized) -> None:
    for plan in ecs_plans(secure_fleet):
        definition = container(secure_fleet, plan)
        assert definition["ResourceRequirements"] == [{"Type": "GPU", "Value": str(plan.tensor_parallel_size)}]
        assert definition["StopTimeout"] == plan.timing.drain_seconds
        assert 0 < definition["MemoryReservation"] < plan.instance_memory_gib * 1024


def test_task_environment_carries_the_plan_and_the_key_is_a_secret(secure_fleet: Synthesized) -> None:
    for plan in ecs_plans(secure_fleet):
        definition = container(secure_fleet, plan)
        environment = {e["Name"]: e["Value"] for e in definition["Environment"]}
        assert ServingPlan.from_json(environment["LLMFLEET_PLAN"]) == plan
        assert environment["LLMFLEET_TARGET"] == "ecs"
        assert environment["LLMFLEET_STORE"] == "s3://llmfleet-store"
        settings = settings_from_env(environment)  # what the entrypoint will read
        assert (settings.plan, settings.target, settings.port) == (plan, "ecs", CONTAINER_PORT)
        assert [m["ContainerPath"] for m in definition["MountPoints"]] == list(WRITABLE_PATHS.values())
        assert settings.model_root in WRITABLE_PATHS.values()
        assert VLLM_API_KEY_ENV not in environment
        assert [s["Name"] for s in definition["Secrets"]] == [VLLM_API_KEY_ENV]
        assert definition["LogConfiguration"]["LogDriver"] == "awslogs"


def test_launch_template_uses_the_planned_instance_and_the_gpu_ami_from_ssm(secure_fleet: Synthesized) -> None:
    for plan in ecs_plans(secure_fleet):
        synthesized = secure_fleet.model_template(plan.model_name)
        data = only(synthesized.find_resources("AWS::EC2::LaunchTemplate"))["LaunchTemplateData"]
        assert data["InstanceType"] == plan.instance_type
        assert data["MetadataOptions"]["HttpTokens"] == "required"
        assert all(d["Ebs"]["Encrypted"] for d in data["BlockDeviceMappings"])
        image_parameter = data["ImageId"]["Ref"]
        parameter = synthesized.to_json()["Parameters"][image_parameter]
        # Resolved by CloudFormation at deploy time: no AMI id or account lookup baked in at synth.
        assert parameter["Type"] == "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"
        assert parameter["Default"] == "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id"
        synthesized.resource_count_is("AWS::AutoScaling::LaunchConfiguration", 0)


def test_capacity_provider_scales_and_drains_without_blocking_destroy(secure_fleet: Synthesized) -> None:
    for plan in ecs_plans(secure_fleet):
        synthesized = secure_fleet.model_template(plan.model_name)
        provider = only(synthesized.find_resources("AWS::ECS::CapacityProvider"))["AutoScalingGroupProvider"]
        assert provider["ManagedScaling"]["Status"] == "ENABLED"
        assert provider["ManagedDraining"] == "ENABLED"
        assert provider["ManagedTerminationProtection"] == "DISABLED"
        group = only(synthesized.find_resources("AWS::AutoScaling::AutoScalingGroup"))
        assert group["MaxSize"] == str(2 * plan.autoscaling.max_capacity)


def _user_data(synthesized) -> str:
    """The launch template's user data with deploy-time tokens written as <token>."""
    data = only(synthesized.find_resources("AWS::EC2::LaunchTemplate"))["LaunchTemplateData"]
    rendered = data["UserData"]["Fn::Base64"]
    if isinstance(rendered, str):
        return rendered
    return "".join(part if isinstance(part, str) else "<token>" for part in rendered["Fn::Join"][1])


def test_root_volume_and_model_cache_follow_the_plan(secure_fleet: Synthesized) -> None:
    for plan in ecs_plans(secure_fleet):
        synthesized = secure_fleet.model_template(plan.model_name)
        data = only(synthesized.find_resources("AWS::EC2::LaunchTemplate"))["LaunchTemplateData"]
        (root,) = data["BlockDeviceMappings"]
        assert root["Ebs"]["VolumeSize"] == plan.root_volume_gib
        user_data = _user_data(synthesized)
        assert "/var/lib/cloud/scripts/per-boot/llmfleet-model-cache.sh" in user_data
        assert user_data.index("llmfleet-model-cache.sh") < user_data.index("ECS_CLUSTER=")


def test_warm_pool_of_stopped_instances_with_the_image_pulled_as_planned(secure_fleet: Synthesized) -> None:
    plans = ecs_plans(secure_fleet)
    assert any(p.autoscaling.warm_pool_instances for p in plans) and not all(p.autoscaling.warm_pool_instances for p in plans)
    for plan in plans:
        synthesized = secure_fleet.model_template(plan.model_name)
        instances = plan.autoscaling.warm_pool_instances
        pools = synthesized.find_resources("AWS::AutoScaling::WarmPool")
        user_data = _user_data(synthesized)
        hooks = synthesized.find_resources("AWS::AutoScaling::LifecycleHook")
        if not instances:
            assert not pools and not hooks and "ECS_WARM_POOLS_CHECK" not in user_data and "docker pull" not in user_data
            continue
        pool = only(pools)
        assert (pool["MinSize"], pool["MaxGroupPreparedCapacity"], pool["PoolState"]) == (instances, instances, "Stopped")
        assert "InstanceReusePolicy" not in pool  # ECS refuses reuse on scale-in for its capacity providers
        hook = only(hooks)
        assert (hook["LifecycleHookName"], hook["LifecycleTransition"], hook["DefaultResult"]) == (
            "llmfleet-instance-ready",
            "autoscaling:EC2_INSTANCE_LAUNCHING",
            "CONTINUE",
        )
        assert "echo ECS_WARM_POOLS_CHECK=true >> /etc/ecs/ecs.config" in user_data
        assert "docker pull <token>" in user_data

        # The instance role may pull this repository only, and complete its own group's hook only.
        group = only(synthesized.find_resources("AWS::AutoScaling::AutoScalingGroup"))
        profile = synthesized.find_resources("AWS::IAM::InstanceProfile")
        role_id = only(profile)["Roles"][0]["Ref"]
        policies = synthesized.find_resources("AWS::IAM::Policy", {"Properties": {"Roles": [{"Ref": role_id}]}})
        statements = [s for p in policies.values() for s in p["Properties"]["PolicyDocument"]["Statement"]]
        (pull,) = [s for s in statements if "ecr:BatchGetImage" in as_list(s["Action"])]
        assert pull["Resource"] != "*" and "repository" in json.dumps(pull["Resource"])
        (complete,) = [s for s in statements if "autoscaling:CompleteLifecycleAction" in as_list(s["Action"])]
        assert complete["Condition"]["StringEquals"] == {
            "autoscaling:ResourceTag/llmfleet:fleet": plan.fleet,
            "autoscaling:ResourceTag/llmfleet:stage": plan.stage,
            "autoscaling:ResourceTag/llmfleet:model": plan.model_name,
        }
        assert {"Key": "llmfleet:model", "Value": plan.model_name, "PropagateAtLaunch": True} in group["Tags"]


def test_service_grace_circuit_breaker_and_deployment_alarm(secure_fleet: Synthesized) -> None:
    for plan in ecs_plans(secure_fleet):
        service = only(secure_fleet.model_template(plan.model_name).find_resources("AWS::ECS::Service"))
        assert service["HealthCheckGracePeriodSeconds"] == plan.timing.startup_grace_seconds
        deployment = service["DeploymentConfiguration"]
        assert deployment["DeploymentCircuitBreaker"] == {"Enable": True, "Rollback": True}
        assert deployment["Alarms"]["Enable"] and deployment["Alarms"]["Rollback"]
        assert deployment["Alarms"]["AlarmNames"] == [f"llmfleet-demo-prod-{plan.model_name}-Ecs5xxRate"]
        assert "DesiredCount" not in service  # autoscaling owns it; a deploy must not reset it


def test_target_group_checks_health_and_drains_as_planned(secure_fleet: Synthesized) -> None:
    for plan in ecs_plans(secure_fleet):
        group = only(secure_fleet.model_template(plan.model_name).find_resources("AWS::ElasticLoadBalancingV2::TargetGroup"))
        assert group["HealthCheckPath"] == "/health" == plan.timing.health_check_path
        assert group["HealthCheckPort"] == "traffic-port"
        assert group["HealthCheckIntervalSeconds"] == plan.timing.health_check_interval_seconds
        attributes = {a["Key"]: a["Value"] for a in group["TargetGroupAttributes"]}
        assert attributes["deregistration_delay.timeout_seconds"] == str(plan.timing.deregistration_delay_seconds)


def test_only_client_paths_reach_vllm_admin_paths_and_the_rest_get_403(secure_fleet: Synthesized) -> None:
    assert not set(forwarded_paths("text")) & set(VLLM_ADMIN_PATHS)
    forbidden = {"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "403", "ContentType": "text/plain", "MessageBody": "forbidden"}}
    for plan in ecs_plans(secure_fleet):
        synthesized = secure_fleet.model_template(plan.model_name)
        listener = only(synthesized.find_resources("AWS::ElasticLoadBalancingV2::Listener"))
        assert listener["DefaultActions"] == [forbidden]
        forwarded, denied = [], []
        for rule in sorted(synthesized.find_resources("AWS::ElasticLoadBalancingV2::ListenerRule").values(), key=lambda r: r["Properties"]["Priority"]):
            (action,) = rule["Properties"]["Actions"]
            (condition,) = rule["Properties"]["Conditions"]
            assert condition["Field"] == "path-pattern"
            paths = condition["PathPatternConfig"]["Values"]
            if action == forbidden:
                assert not forwarded, "403 rules must come before any forward rule"
                denied += paths
            else:
                assert action["Type"] == "forward"
                forwarded += paths
        assert sorted(forwarded) == sorted(forwarded_paths(plan.kind))
        assert sorted(denied) == sorted(VLLM_ADMIN_PATHS)
        assert {"/v1/load_lora_adapter", "/v1/unload_lora_adapter", "/metrics"} <= set(denied)
        assert not any("*" in path for path in forwarded)


def test_https_listener_with_the_given_certificate_and_no_plain_http(public_fleet: Synthesized) -> None:
    for plan in ecs_plans(public_fleet):
        template = public_fleet.model_template(plan.model_name)
        listener = only(template.find_resources("AWS::ElasticLoadBalancingV2::Listener"))
        assert listener["Protocol"] == "HTTPS" and listener["Port"] == 443
        assert listener["Certificates"] == [{"CertificateArn": CERTIFICATE_ARN}]
        assert listener["SslPolicy"].startswith("ELBSecurityPolicy-TLS13")


def test_load_balancer_streams_logs_drops_invalid_headers_and_refuses_deletion(secure_fleet: Synthesized) -> None:
    for plan in ecs_plans(secure_fleet):
        balancer = only(secure_fleet.model_template(plan.model_name).find_resources("AWS::ElasticLoadBalancingV2::LoadBalancer"))
        attributes = {a["Key"]: a["Value"] for a in balancer["LoadBalancerAttributes"]}
        assert int(attributes["idle_timeout.timeout_seconds"]) >= 300
        assert attributes["routing.http.drop_invalid_header_fields.enabled"] == "true"
        assert attributes["access_logs.s3.enabled"] == "true"
        assert attributes["access_logs.s3.prefix"] == f"alb/{plan.model_name}"
        assert attributes["deletion_protection.enabled"] == "true"


def test_autoscaling_tracks_the_queue_metric_with_request_count_fallback(secure_fleet: Synthesized) -> None:
    for plan in ecs_plans(secure_fleet):
        synthesized = secure_fleet.model_template(plan.model_name)
        targets = synthesized.find_resources(
            "AWS::ApplicationAutoScaling::ScalableTarget", {"Properties": {"ServiceNamespace": "ecs"}}
        )
        target = only(targets)
        assert (target["MinCapacity"], target["MaxCapacity"]) == (plan.autoscaling.min_capacity, plan.autoscaling.max_capacity)
        tracking = [
            p["Properties"]["TargetTrackingScalingPolicyConfiguration"]
            for p in synthesized.find_resources("AWS::ApplicationAutoScaling::ScalingPolicy").values()
            if p["Properties"]["PolicyType"] == "TargetTrackingScaling"
            and p["Properties"]["ScalingTargetId"] == {"Ref": next(iter(targets))}
        ]
        queue = [t for t in tracking if "CustomizedMetricSpecification" in t]
        requests = [t for t in tracking if "PredefinedMetricSpecification" in t]
        assert [t["TargetValue"] for t in queue] == [plan.autoscaling.target_queue_depth]
        assert queue[0]["CustomizedMetricSpecification"] == {
            "Namespace": "LLMFleet",
            "MetricName": "RequestsWaiting",
            # Target keeps a model served on both targets from scaling ECS on SageMaker's queue.
            "Dimensions": [
                {"Name": "Model", "Value": plan.model_name},
                {"Name": "Stage", "Value": plan.stage},
                {"Name": "Target", "Value": "ecs"},
            ],
            "Statistic": "Average",
        }
        assert [t["TargetValue"] for t in requests] == [plan.autoscaling.target_requests_per_minute]
        assert requests[0]["PredefinedMetricSpecification"]["PredefinedMetricType"] == "ALBRequestCountPerTarget"
        assert queue[0]["ScaleInCooldown"] == plan.autoscaling.scale_in_cooldown_seconds


def test_a_model_that_may_scale_to_zero_wakes_on_load_balancer_errors(secure_fleet: Synthesized) -> None:
    for plan in ecs_plans(secure_fleet):
        step = secure_fleet.model_template(plan.model_name).find_resources(
            "AWS::ApplicationAutoScaling::ScalingPolicy", {"Properties": {"PolicyType": "StepScaling"}}
        )
        assert bool(step) == (plan.autoscaling.min_capacity == 0), plan.model_name
        ecs_targets = secure_fleet.model_template(plan.model_name).find_resources(
            "AWS::ApplicationAutoScaling::ScalableTarget", {"Properties": {"ServiceNamespace": "ecs"}}
        )
        wake = [
            p for p in step.values()
            if p["Properties"]["StepScalingPolicyConfiguration"]["AdjustmentType"] == "ChangeInCapacity"
            and p["Properties"]["ScalingTargetId"] == {"Ref": next(iter(ecs_targets))}
        ]  # fmt: skip
        for policy in wake:  # refusals go on while the woken task starts: no second task for them meanwhile
            assert policy["Properties"]["StepScalingPolicyConfiguration"]["Cooldown"] == plan.autoscaling.wake_seconds["ecs"]
        assert len(wake) == (plan.autoscaling.min_capacity == 0)
    assert any(p.autoscaling.min_capacity == 0 for p in ecs_plans(secure_fleet))


def test_a_model_that_may_scale_to_zero_stops_its_tasks_after_the_idle_period(secure_fleet: Synthesized) -> None:
    for plan in ecs_plans(secure_fleet):
        synthesized = secure_fleet.model_template(plan.model_name)
        policies = synthesized.find_resources(
            "AWS::ApplicationAutoScaling::ScalingPolicy",
            {"Properties": {"StepScalingPolicyConfiguration": {"AdjustmentType": "ExactCapacity"}}},
        )
        ecs_target = next(iter(synthesized.find_resources(
            "AWS::ApplicationAutoScaling::ScalableTarget", {"Properties": {"ServiceNamespace": "ecs"}}
        )))  # fmt: skip
        to_zero = {k: p for k, p in policies.items() if p["Properties"]["ScalingTargetId"] == {"Ref": ecs_target}}
        if plan.autoscaling.min_capacity:
            assert not to_zero and plan.autoscaling.idle_minutes is None
            continue
        (key,) = to_zero
        steps = to_zero[key]["Properties"]["StepScalingPolicyConfiguration"]["StepAdjustments"]
        assert steps == [{"MetricIntervalUpperBound": 0, "ScalingAdjustment": 0}]
        idle = only(synthesized.find_resources("AWS::CloudWatch::Alarm", {"Properties": {"AlarmActions": [{"Ref": key}]}}))
        assert idle["EvaluationPeriods"] == idle["DatapointsToAlarm"] == plan.autoscaling.idle_minutes
        assert (idle["ComparisonOperator"], idle["Threshold"], idle["TreatMissingData"]) == (
            "LessThanOrEqualToThreshold",
            0,
            "breaching",
        )
        # Forwarded requests and those the load balancer refused for want of a task both keep it up.
        (expression,) = [m for m in idle["Metrics"] if "Expression" in m]
        assert expression["Expression"] == "FILL(forwarded, 0) + FILL(refused, 0)"
        names = {m["Id"]: m["MetricStat"]["Metric"]["MetricName"] for m in idle["Metrics"] if "MetricStat" in m}
        assert names == {"forwarded": "RequestCount", "refused": "HTTPCode_ELB_5XX_Count"}
        # The capacity provider follows the tasks down: instances may go to zero and nothing protects them.
        group = only(synthesized.find_resources("AWS::AutoScaling::AutoScalingGroup"))
        assert group["MinSize"] == "0"
        assert not group.get("NewInstancesProtectedFromScaleIn", False)


def test_task_reads_only_its_own_store_prefixes_and_writes_only_its_compile_cache(secure_fleet: Synthesized) -> None:
    for plan in ecs_plans(secure_fleet):
        synthesized = secure_fleet.model_template(plan.model_name)
        task = only(synthesized.find_resources("AWS::ECS::TaskDefinition"))
        assert_serving_role_grants(synthesized, task["TaskRoleArn"]["Fn::GetAtt"][0], plan.model_name, plan.stage, "ecs")


def test_props_refuse_a_plan_that_does_not_target_ecs(secure_fleet: Synthesized) -> None:
    plan = next(p for p in secure_fleet.fleet.plans if "ecs" not in p.targets)
    with pytest.raises(StackConfigError, match=f"model '{plan.model_name}'.*not 'ecs'"):
        GpuServiceProps(
            plan=plan, vpc=None, store=StoreLocation("b"), key=None, image=None, access_logs=None  # type: ignore[arg-type]
        )
