"""vLLM /metrics text -> CloudWatch EMF records: parsing, bucket deltas, percentiles."""

from __future__ import annotations

import json
import threading

import pytest

from llmfleet.containers.entrypoint.metrics import MetricsPublisher, emf_record, parse_vllm_metrics
from llmfleet.model_store.contract import telemetry


def exposition(*, waiting: float, running: float, kv: float, tokens: float, ttft: dict[str, float], e2e: dict[str, float]) -> str:
    """A /metrics page shaped like vLLM 0.32's (two engines' label sets to be summed for gauges)."""
    lines = [
        "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
        "# TYPE vllm:num_requests_waiting gauge",
        f'vllm:num_requests_waiting{{engine="0",model_name="m"}} {waiting - 1}',
        'vllm:num_requests_waiting{engine="1",model_name="m"} 1.0',
        "# TYPE vllm:num_requests_running gauge",
        f'vllm:num_requests_running{{engine="0",model_name="m"}} {running}',
        "# TYPE vllm:kv_cache_usage_perc gauge",
        f'vllm:kv_cache_usage_perc{{engine="0",model_name="m"}} {kv}',
        "# TYPE vllm:generation_tokens counter",
        f'vllm:generation_tokens_total{{engine="0",model_name="m"}} {tokens}',
        'vllm:generation_tokens_created{engine="0",model_name="m"} 1.7e+09',
    ]
    for name, buckets in (("vllm:time_to_first_token_seconds", ttft), ("vllm:e2e_request_latency_seconds", e2e)):
        lines.append(f"# TYPE {name} histogram")
        for bound, count in buckets.items():
            lines.append(f'{name}_bucket{{engine="0",le="{bound}",model_name="m"}} {count}')
        lines.append(f'{name}_count{{engine="0",model_name="m"}} {buckets["+Inf"]}')
        lines.append(f'{name}_sum{{engine="0",model_name="m"}} 1.0')
    return "\n".join(lines) + "\n"


BEFORE = exposition(
    waiting=3, running=2, kv=0.25, tokens=1000,
    ttft={"0.1": 10, "0.5": 10, "1.0": 10, "+Inf": 10},
    e2e={"1.0": 10, "5.0": 10, "+Inf": 10},
)
AFTER = exposition(
    waiting=5, running=4, kv=0.5, tokens=1500,
    # 100 new requests: 50 under 0.1 s, 40 in (0.1, 0.5], 10 in (0.5, 1.0]
    ttft={"0.1": 60, "0.5": 100, "1.0": 110, "+Inf": 110},
    e2e={"1.0": 10, "5.0": 110, "+Inf": 110},
)


def test_gauges_are_summed_over_label_sets():
    snapshot = parse_vllm_metrics(AFTER, at=0.0)

    assert snapshot.values["vllm:num_requests_waiting"] == 5
    assert snapshot.values["vllm:generation_tokens_total"] == 1500
    assert snapshot.buckets["vllm:time_to_first_token_seconds"][0.5] == 100


def test_record_over_an_interval():
    record = emf_record(
        parse_vllm_metrics(BEFORE, at=100.0),
        parse_vllm_metrics(AFTER, at=110.0),
        model="qwen3-small",
        stage="prod",
        target="sagemaker",
        adapters_loaded=3,
        timestamp_ms=1_700_000_000_000,
    )

    directive = record["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == telemetry.NAMESPACE
    assert directive["Dimensions"] == [list(telemetry.DIMENSIONS)]
    assert record["_aws"]["Timestamp"] == 1_700_000_000_000
    assert {name: record[name] for name in telemetry.DIMENSIONS} == telemetry.dimensions("qwen3-small", "prod", "sagemaker")
    assert (record["RequestsWaiting"], record["RequestsRunning"], record["AdaptersLoaded"]) == (5, 4, 3)
    assert record["KvCacheUsage"] == 50.0
    assert record["GenerationTokensPerSecond"] == 50.0
    # Over the interval's 100 requests only (the 10 before are subtracted).
    assert record["TimeToFirstTokenP50"] == pytest.approx(100.0)
    assert record["TimeToFirstTokenP90"] == pytest.approx(500.0)
    assert record["TimeToFirstTokenP99"] == pytest.approx(950.0)
    assert record["E2ELatencyP50"] == pytest.approx(3000.0)
    assert record["E2ELatencyP99"] == pytest.approx(1000 + 4000 * 0.99)
    declared = {metric["Name"]: metric["Unit"] for metric in directive["Metrics"]}
    assert set(declared) == set(record) - {"_aws", *telemetry.DIMENSIONS}
    assert declared["KvCacheUsage"] == "Percent" and declared["TimeToFirstTokenP50"] == "Milliseconds"


def test_first_record_has_gauges_but_no_rates_or_percentiles():
    record = emf_record(None, parse_vllm_metrics(AFTER, at=1.0), model="m", stage="s", target="ecs", adapters_loaded=0, timestamp_ms=0)

    assert record["RequestsWaiting"] == 5
    assert not any(name.startswith(("TimeToFirstToken", "E2ELatency", "GenerationTokens")) for name in record)


def test_an_idle_interval_publishes_no_percentiles():
    snapshot = parse_vllm_metrics(AFTER, at=1.0)
    later = parse_vllm_metrics(AFTER, at=2.0)

    record = emf_record(snapshot, later, model="m", stage="s", target="ecs", adapters_loaded=0, timestamp_ms=0)

    assert record["GenerationTokensPerSecond"] == 0
    assert "TimeToFirstTokenP50" not in record


def test_a_counter_reset_publishes_no_percentiles():
    record = emf_record(
        parse_vllm_metrics(AFTER, at=1.0), parse_vllm_metrics(BEFORE, at=2.0), model="m", stage="s", target="ecs", adapters_loaded=0, timestamp_ms=0
    )

    assert "TimeToFirstTokenP50" not in record and "GenerationTokensPerSecond" not in record


def test_publisher_prints_one_json_line_per_scrape_and_survives_a_failed_scrape():
    pages = iter([BEFORE, RuntimeError("connection refused"), AFTER])
    lines: list[str] = []
    stop = threading.Event()

    def fetch() -> str:
        page = next(pages, None)
        if page is None:
            stop.set()
            return AFTER
        if isinstance(page, Exception):
            raise page
        return page

    publisher = MetricsPublisher(fetch, lambda: 2, model="m", stage="s", target="ecs", interval=0.001, stop=stop, emit=lines.append)
    publisher.run()

    records = [json.loads(line) for line in lines]
    assert len(records) >= 2
    assert "TimeToFirstTokenP50" not in records[0] and "TimeToFirstTokenP50" in records[1]
    assert all("\n" not in line for line in lines)
