"""Each model gets a dashboard and alarms that notify the fleet's topic."""

from __future__ import annotations

from tests.synth.conftest import Synthesized, only


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


def test_alarms_cover_errors_queue_hosts_kv_cache_and_notify_the_topic(secure_fleet: Synthesized) -> None:
    base = secure_fleet.template(secure_fleet.fleet.base)
    (topic_id,) = base.find_resources("AWS::SNS::Topic")
    for plan in secure_fleet.fleet.plans:
        alarms = secure_fleet.model_template(plan.model_name).find_resources("AWS::CloudWatch::Alarm")
        by_id = {name.removeprefix("Monitoring")[: -8]: alarm["Properties"] for name, alarm in alarms.items() if name.startswith("Monitoring")}
        expected = {"QueueDepth", "KvCacheSaturation"}
        if "ecs" in plan.targets:
            expected |= {"Ecs5xxRate", "EcsUnhealthyHosts", "EcsTasksPending"}
        if "sagemaker" in plan.targets:
            expected |= {"SageMaker5xxRate"}
        assert set(by_id) == expected, plan.model_name
        assert by_id["QueueDepth"]["Threshold"] == plan.autoscaling.target_queue_depth * 4
        for alarm in by_id.values():
            (action,) = alarm["AlarmActions"]
            assert "Fn::ImportValue" in action and topic_id[:20] in str(action)
