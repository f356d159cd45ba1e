"""An image model's stacks (examples/image/fleet.yaml: SD3.5 Large Turbo on ECS and SageMaker):
the same constructs as an LLM's, with the images path as the only client path, image-sized
grace and scaling, image alarms; cdk-nag, cfn-lint and checkov as for the example fleet."""

from __future__ import annotations

import json
import re
from pathlib import Path

import aws_cdk as cdk
import pytest

from llmfleet.model_store.contract.plan import ImagePlan
from llmfleet.model_store.planning.image import latency_alarm_ms
from llmfleet.model_store.contract.telemetry import (
    E2E_LATENCY_PREFIX,
    KV_CACHE_USAGE,
    quantile_metric,
    REQUESTS_WAITING,
)
from llmfleet.stacks.fleet import compose_fleet
from llmfleet.model_store.contract.front_door import (
    ADAPTERS_PATH,
    IMAGE_CLIENT_PATHS,
    TEXT_CLIENT_PATHS,
    VLLM_ADMIN_PATHS,
)
from tests.synth.conftest import CERTIFICATE_ARN, Synthesized, cdk_json_context, only
from tests.conftest import REPO
from tests.synth import test_compliance as compliance
from tests.synth.test_compliance import acknowledgements, security_section

# The example fleet's cfn-lint and checkov checks, run on this module's assembly_dir.
test_cfn_lint_reports_nothing = compliance.test_cfn_lint_reports_nothing
test_checkov_fails_nothing_and_every_skip_is_reasoned_used_and_documented = (
    compliance.test_checkov_fails_nothing_and_every_skip_is_reasoned_used_and_documented
)

MODEL = "sd35-turbo"


@pytest.fixture(scope="module")
def image_fleet(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    outdir = tmp_path_factory.mktemp("image-fleet")
    context = cdk_json_context(fleet=str(REPO / "examples" / "image" / "fleet.yaml"), certificate_arn=CERTIFICATE_ARN)
    app = cdk.App(context=context, outdir=str(outdir))
    fleet = compose_fleet(app)
    app.synth()
    return Synthesized(fleet=fleet, outdir=outdir)


@pytest.fixture(scope="module")
def assembly_dir(image_fleet: Synthesized) -> Path:
    return image_fleet.outdir


def plan_of(image_fleet: Synthesized) -> ImagePlan:
    (plan,) = image_fleet.fleet.plans
    assert isinstance(plan, ImagePlan)
    return plan


def test_cdk_nag_passes_and_every_acknowledgement_is_documented(image_fleet: Synthesized) -> None:
    report = image_fleet.outdir / "validation-report.json"
    if report.exists():
        conclusions = {r["pluginName"]: r["conclusion"] for r in json.loads(report.read_text())["pluginReports"]}
        assert set(conclusions.values()) <= {"success"}, conclusions
    documented = security_section()
    for finding in acknowledgements(image_fleet):
        assert f"`{re.sub(r'[[].*', '', finding)}`" in documented, finding


def test_only_the_images_path_and_models_reach_the_server(image_fleet: Synthesized) -> None:
    assert not set(IMAGE_CLIENT_PATHS) & set(VLLM_ADMIN_PATHS)
    template = image_fleet.model_template(MODEL)
    forwarded = []
    for rule in template.find_resources("AWS::ElasticLoadBalancingV2::ListenerRule").values():
        (action,) = rule["Properties"]["Actions"]
        if action["Type"] == "forward":
            forwarded += rule["Properties"]["Conditions"][0]["PathPatternConfig"]["Values"]
    assert sorted(forwarded) == sorted([*IMAGE_CLIENT_PATHS, ADAPTERS_PATH])
    assert not set(forwarded) & (set(TEXT_CLIENT_PATHS) - set(IMAGE_CLIENT_PATHS))  # no chat or completions routes


def test_the_task_runs_the_image_plan_on_one_gpu_with_its_grace(image_fleet: Synthesized) -> None:
    plan = plan_of(image_fleet)
    template = image_fleet.model_template(MODEL)
    (container,) = only(template.find_resources("AWS::ECS::TaskDefinition"))["ContainerDefinitions"]
    assert container["ResourceRequirements"] == [{"Type": "GPU", "Value": "1"}]
    environment = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert ImagePlan.model_validate_json(environment["LLMFLEET_PLAN"]) == plan
    service = only(template.find_resources("AWS::ECS::Service"))
    assert service["HealthCheckGracePeriodSeconds"] == plan.timing.startup_grace_seconds
    endpoint_config = only(template.find_resources("AWS::SageMaker::EndpointConfig"))
    (variant,) = endpoint_config["ProductionVariants"]
    assert variant["InstanceType"] == plan.sagemaker_instance_type
    assert variant["ContainerStartupHealthCheckTimeoutInSeconds"] == plan.timing.startup_grace_seconds


def test_scaling_tracks_images_waiting_and_alarms_fit_images(image_fleet: Synthesized) -> None:
    plan = plan_of(image_fleet)
    template = image_fleet.model_template(MODEL)
    policies = template.find_resources("AWS::ApplicationAutoScaling::ScalingPolicy")
    tracked = [
        p["Properties"]["TargetTrackingScalingPolicyConfiguration"]
        for p in policies.values()
        if "CustomizedMetricSpecification" in p["Properties"].get("TargetTrackingScalingPolicyConfiguration", {})
    ]
    assert tracked and all(t["CustomizedMetricSpecification"]["MetricName"] == REQUESTS_WAITING for t in tracked)
    assert {t["TargetValue"] for t in tracked} == {plan.autoscaling.target_queue_depth}
    alarms = [a["Properties"] for a in template.find_resources("AWS::CloudWatch::Alarm").values()]
    assert not [a for a in alarms if a.get("MetricName") == KV_CACHE_USAGE]  # no KV cache in a diffusion pipeline
    queue = [a for a in alarms if a.get("MetricName") == REQUESTS_WAITING]
    assert queue and all("images wait per server" in a["AlarmDescription"] for a in queue)
    latency = [a for a in alarms if a.get("MetricName") == quantile_metric(E2E_LATENCY_PREFIX, 99)]
    assert len(latency) == len(plan.targets)
    assert {a["Threshold"] for a in latency} == {latency_alarm_ms(plan)}  # seconds per image, not tokens
