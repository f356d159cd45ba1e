"""Status rows from plain observations: quantiles, Prometheus samples, drift, cost."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmfleet.model_store.ops.status import (
    Deployment,
    fleet_cost_per_hour,
    Metrics,
    metrics_from_cloudwatch,
    metrics_from_prometheus,
    model_status,
    ServerAdapters,
    StatusError,
    unit_cost_per_hour,
)

REPO = Path(__file__).resolve().parents[2]
INF = float("inf")


def test_prometheus_samples_sum_over_base_model_and_adapters():
    samples = [
        ("vllm:num_requests_waiting", {"model_name": "qwen3-small"}, 2.0),
        ("vllm:num_requests_waiting", {"model_name": "medical"}, 1.0),
        ("vllm:num_requests_running", {"model_name": "qwen3-small"}, 3.0),
        ("vllm:e2e_request_latency_seconds_bucket", {"model_name": "qwen3-small", "le": "0.5"}, 1.0),
        ("vllm:e2e_request_latency_seconds_bucket", {"model_name": "medical", "le": "0.5"}, 1.0),
        ("vllm:e2e_request_latency_seconds_bucket", {"model_name": "qwen3-small", "le": "1.0"}, 2.0),
        ("vllm:e2e_request_latency_seconds_bucket", {"model_name": "medical", "le": "1.0"}, 2.0),
        ("vllm:e2e_request_latency_seconds_bucket", {"model_name": "qwen3-small", "le": "+Inf"}, 2.0),
        ("vllm:e2e_request_latency_seconds_bucket", {"model_name": "medical", "le": "+Inf"}, 2.0),
        ("vllm:time_to_first_token_seconds_bucket", {"model_name": "qwen3-small", "le": "0.1"}, 4.0),
        ("vllm:time_to_first_token_seconds_bucket", {"model_name": "qwen3-small", "le": "+Inf"}, 4.0),
        ("vllm:generation_tokens_total", {"model_name": "qwen3-small"}, 99.0),
    ]
    metrics = metrics_from_prometheus(samples)
    assert metrics.queue_depth == 3.0
    assert metrics.running_requests == 3.0
    # 4 requests: 2 at <= 0.5 s, 4 at <= 1 s -> p50 is the 0.5 bound, p99 interpolates to 0.99 s.
    assert metrics.latency_p50_ms == 500.0
    assert metrics.latency_p99_ms == 990.0
    assert metrics.ttft_p50_ms == 50.0


def test_prometheus_without_vllm_samples_has_no_figures():
    assert metrics_from_prometheus([("process_cpu_seconds_total", {}, 1.0)]) == Metrics()


def test_cloudwatch_latest_values_map_to_fields_and_unknown_fields_are_refused():
    metrics = metrics_from_cloudwatch({"q": 4.0, "p99": 812.0}, {"queue_depth": "q", "latency_p99_ms": "p99", "latency_p50_ms": "p50"})
    assert metrics == Metrics(queue_depth=4.0, latency_p99_ms=812.0)
    with pytest.raises(StatusError, match="queue"):
        metrics_from_cloudwatch({}, {"queue": "q"})


def test_row_counts_running_servers_in_cost_and_reports_drift_per_server():
    row = model_status(
        model="qwen3-small",
        stage="prod",
        deployment=Deployment("ecs", "qwen3-small-svc", desired=3, running=2, pending=1, instance_type="g6.xlarge", healthy=2),
        unit_cost_per_hour_usd=0.8048,
        promoted={"medical": "v2", "legal": "v1"},
        servers=[
            ServerAdapters("task-b", {"medical": "v1", "legal": "v1"}),
            ServerAdapters("task-a", {"medical": "v2", "legal": "v1"}),
            ServerAdapters("task-c", error="connection refused"),
        ],
        expected={"task-a": {"medical": "v2", "legal": "v1"}, "task-b": {"medical": "v2", "legal": "v1"}},
    )
    assert row.cost_per_hour_usd == pytest.approx(2 * 0.8048)
    assert [s.server_id for s in row.servers] == ["task-a", "task-b", "task-c"]
    assert [s.drift for s in row.servers] == [[], ["medical"], []]
    assert row.servers[2].error == "connection refused"
    assert row.promoted == {"legal": "v1", "medical": "v2"}
    assert row.to_json()["servers"][1]["expected"] == {"medical": "v2", "legal": "v1"}


def test_adapter_loaded_but_retired_counts_as_drift():
    row = model_status(
        model="m",
        stage="prod",
        deployment=Deployment("local", "http://127.0.0.1:8000", desired=1, running=1, instance_type="local"),
        unit_cost_per_hour_usd=1.0,
        promoted={},
        servers=[ServerAdapters("s1", {"old": "v1"})],
        expected={"s1": {}},
    )
    assert row.servers[0].drift == ["old"]


def test_deployment_rejects_unknown_target_and_negative_counts():
    with pytest.raises(StatusError, match="target 'eks'"):
        Deployment("eks", "x", desired=1, running=1, instance_type="g6.xlarge")
    with pytest.raises(StatusError, match="running -1"):
        Deployment("ecs", "x", desired=1, running=-1, instance_type="g6.xlarge")


def test_unit_cost_per_target_comes_from_the_plan_and_its_catalog():
    from llmfleet.scripts.cli_common import load_and_plan

    _, plans = load_and_plan(REPO / "fleet.yaml")
    both = next(p for p in plans if p.targets == ["ecs", "sagemaker"])
    ecs, sagemaker = unit_cost_per_hour(both, "ecs"), unit_cost_per_hour(both, "sagemaker")
    assert ecs + sagemaker == pytest.approx(both.cost_per_hour_usd)
    assert unit_cost_per_hour(both, "local") == both.cost_per_hour_usd
    ecs_only = next(p for p in plans if p.targets == ["ecs"])
    with pytest.raises(StatusError, match="'sagemaker' is not in its plan's targets"):
        unit_cost_per_hour(ecs_only, "sagemaker")


def test_fleet_cost_adds_rows():
    rows = [
        model_status(
            model=name,
            stage="prod",
            deployment=Deployment("ecs", name, desired=n, running=n, instance_type="g6.xlarge"),
            unit_cost_per_hour_usd=1.5,
            promoted={},
        )
        for name, n in (("a", 1), ("b", 2))
    ]
    assert fleet_cost_per_hour(rows) == 4.5


def test_unit_cost_on_sagemaker_needs_a_sagemaker_price():
    from llmfleet.scripts.cli_common import load_and_plan

    _, plans = load_and_plan(REPO / "fleet.yaml")
    both = next(p for p in plans if p.targets == ["ecs", "sagemaker"])
    unpriced = both.model_copy(update={"instance_type": "g6e.4xlarge"})  # no SageMaker twin in the catalog
    with pytest.raises(StatusError, match="'.*': g6e.4xlarge has no sagemaker price in the GPU catalog"):
        unit_cost_per_hour(unpriced, "sagemaker")
