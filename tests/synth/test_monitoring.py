"""Each model gets a dashboard and alarms that notify the fleet's topic."""

from __future__ import annotations

import json

from llmfleet.model_store.contract.plan import ServingPlan
from tests.synth.conftest import Synthesized, only


def fleet_dimensions(plan: ServingPlan, target: str) -> list[dict]:
    """The container's metric dimensions (model_store.contract.telemetry.DIMENSIONS) as CloudFormation lists them."""
    return [
        {"Name": "Model", "Value": plan.model_name},
        {"Name": "Stage", "Value": plan.stage},
        {"Name": "Target", "Value": target},
    ]


def test_every_model_has_a_dashboard_with_the_serving_figures(secure_fleet: Synthesized) -> None:
    for plan in secure_fleet.fleet.plans:
        dashboard = only(secure_fleet.model_template(plan.model_name).find_resources("AWS::CloudWatch::Dashboard"))
        body = str(dashboard["DashboardBody"])
        for figure in ("RequestsWaiting", "KvCacheUsage", "TimeToFirstTokenP90", "GenerationTokensPerSecond"):
            assert figure in body, (plan.model_name, figure)
        if "ecs" in plan.targets:
            for figure in ("HealthyHostCount", "HTTPCode_Target_5XX_Count", "GroupInServiceInstances"):
                assert figure in body, (plan.model_name, figure)
        if "sagemaker" in plan.targets:
            assert "Invocation5XXErrors" in body


def dashboard_fleet_metrics(body: dict | str) -> list[list]:
    """The LLMFleet metric rows of a dashboard body (an Fn::Join; tokens become a placeholder)."""
    parts = body["Fn::Join"][1] if isinstance(body, dict) else [body]
    widgets = json.loads("".join(p if isinstance(p, str) else "TOKEN" for p in parts))["widgets"]
    rows = [row for w in widgets for row in w.get("properties", {}).get("metrics", [])]
    return [row for row in rows if row and row[0] == "LLMFleet"]


def test_dashboard_shows_the_container_metrics_per_target(secure_fleet: Synthesized) -> None:
    names = {
        "RequestsWaiting", "RequestsRunning", "KvCacheUsage", "GenerationTokensPerSecond",
        "TimeToFirstTokenP50", "TimeToFirstTokenP90", "TimeToFirstTokenP99", "E2ELatencyP50", "E2ELatencyP99",
    }
    for plan in secure_fleet.fleet.plans:
        dashboard = only(secure_fleet.model_template(plan.model_name).find_resources("AWS::CloudWatch::Dashboard"))
        rows = dashboard_fleet_metrics(dashboard["DashboardBody"])
        shown = set()
        for row in rows:
            _, name, *dimensions = [part for part in row if not isinstance(part, dict)]
            assert dimensions[:4] == ["Model", plan.model_name, "Stage", plan.stage], row
            assert dimensions[4] == "Target" and len(dimensions) == 6, row
            shown.add((name, dimensions[5]))
        assert shown == {(name, target) for name in names for target in plan.targets}, plan.model_name


def test_alarms_cover_errors_queue_hosts_kv_cache_and_notify_the_topic(secure_fleet: Synthesized) -> None:
    base = secure_fleet.template(secure_fleet.fleet.base)
    (topic_id,) = base.find_resources("AWS::SNS::Topic")
    for plan in secure_fleet.fleet.plans:
        alarms = secure_fleet.model_template(plan.model_name).find_resources("AWS::CloudWatch::Alarm")
        by_id = {name.removeprefix("Monitoring")[: -8]: alarm["Properties"] for name, alarm in alarms.items() if name.startswith("Monitoring")}
        expected = set()
        if "ecs" in plan.targets:
            expected |= {"EcsQueueDepth", "EcsKvCacheSaturation", "Ecs5xxRate", "EcsUnhealthyHosts", "EcsTasksPending"}
        if "sagemaker" in plan.targets:
            expected |= {"SageMakerQueueDepth", "SageMakerKvCacheSaturation", "SageMaker5xxRate"}
        assert set(by_id) == expected, plan.model_name
        for target, prefix in (("ecs", "Ecs"), ("sagemaker", "SageMaker")):
            if target in plan.targets:
                queue = by_id[f"{prefix}QueueDepth"]
                assert queue["Threshold"] == plan.autoscaling.target_queue_depth * 4
                assert (queue["Namespace"], queue["MetricName"]) == ("LLMFleet", "RequestsWaiting")
                assert queue["Dimensions"] == fleet_dimensions(plan, target)
                assert by_id[f"{prefix}KvCacheSaturation"]["Dimensions"] == fleet_dimensions(plan, target)
        for alarm in by_id.values():
            (action,) = alarm["AlarmActions"]
            assert "Fn::ImportValue" in action and topic_id[:20] in str(action)


def test_a_model_at_zero_raises_no_alarm_that_notifies_people(secure_fleet: Synthesized) -> None:
    """At zero, requests are refused by the load balancer (503) or by SageMaker (no capacity): they wake
    the model, and no alarm that notifies the topic may count them as errors."""
    plans = [p for p in secure_fleet.fleet.plans if p.autoscaling.min_capacity == 0]
    assert plans, "the example fleet must scale a model to zero"
    for plan in plans:
        alarms = secure_fleet.model_template(plan.model_name).find_resources("AWS::CloudWatch::Alarm")
        notifying = [a["Properties"] for a in alarms.values() if "Fn::ImportValue" in json.dumps(a["Properties"].get("AlarmActions", []))]
        for alarm in notifying:
            rendered = json.dumps(alarm)
            assert "HTTPCode_ELB_5XX_Count" not in rendered, alarm["AlarmDescription"]
            if "Invocation5XXErrors" in rendered:  # the SageMaker error alarms take the refused requests out
                assert "FILL(all_5xx, 0) - FILL(no_copy, 0)" in rendered and "NoCapacityInvocationFailures" in rendered
            # A missing datapoint (no server, no metric) never counts as breaching.
            assert alarm.get("TreatMissingData", "missing") in ("notBreaching", "missing"), alarm["AlarmDescription"]
        assert any("Invocation5XXErrors" in json.dumps(a) for a in notifying)
