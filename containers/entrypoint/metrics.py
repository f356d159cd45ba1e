"""vLLM's Prometheus figures as CloudWatch embedded-metric-format (EMF) lines on stdout.

ECS's awslogs driver and SageMaker ship stdout to CloudWatch Logs, which turns EMF lines
into metrics: no agent, no PutMetricData permission. Parsing and record building are pure;
`MetricsPublisher` only scrapes and prints.

Namespace, dimensions (Model, Stage, Target) and metric names are the contract in
model_store/contract/telemetry.py, which the stacks' scaling, alarms and dashboards read too.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from llmfleet.containers.entrypoint.settings import EntrypointSettings
from llmfleet.model_store.ops.boot_log import BootRecord
from llmfleet.model_store.contract.telemetry import (
    ADAPTERS_LOADED,
    BOOT_SECONDS,
    dimensions,
    E2E_LATENCY_PREFIX,
    E2E_QUANTILES,
    GENERATION_TOKENS_PER_SECOND,
    histogram_quantile,
    KV_CACHE_USAGE,
    NAMESPACE,
    PHASE_DIMENSION,
    quantile_metric,
    REQUESTS_RUNNING,
    REQUESTS_WAITING,
    TTFT_PREFIX,
    TTFT_QUANTILES,
)

# vLLM v1 metric names (vllm/v1/metrics/loggers.py, v0.32, 2026-11).
WAITING = "vllm:num_requests_waiting"
RUNNING = "vllm:num_requests_running"
KV_CACHE = "vllm:kv_cache_usage_perc"  # a 0-1 fraction despite the name
GENERATION_TOKENS = "vllm:generation_tokens_total"
TTFT = "vllm:time_to_first_token_seconds"
E2E = "vllm:e2e_request_latency_seconds"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """One scrape, summed over label sets (engines, model names)."""

    at: float  # monotonic seconds
    values: dict[str, float] = field(default_factory=dict)  # gauges and counters by sample name
    buckets: dict[str, dict[float, float]] = field(default_factory=dict)  # histogram -> le -> cumulative count


def parse_vllm_metrics(text: str, at: float) -> Snapshot:
    """A Snapshot of the figures this module publishes, from `/metrics` text."""
    values: dict[str, float] = defaultdict(float)
    buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                buckets[sample.name.removesuffix("_bucket")][float(sample.labels["le"])] += sample.value
            else:
                values[sample.name] += sample.value
    return Snapshot(at=at, values=dict(values), buckets={name: dict(b) for name, b in buckets.items()})


def _bucket_delta(previous: Snapshot, current: Snapshot, name: str) -> dict[float, float] | None:
    now, before = current.buckets.get(name), previous.buckets.get(name, {})
    if now is None:
        return None
    delta = {bound: count - before.get(bound, 0.0) for bound, count in now.items()}
    return None if any(value < 0 for value in delta.values()) else delta  # counter reset


def emf_record(
    previous: Snapshot | None,
    current: Snapshot,
    *,
    model: str,
    stage: str,
    target: str,
    adapters_loaded: int,
    timestamp_ms: int,
) -> dict[str, Any]:
    """One EMF record. Gauges always; rates and latency percentiles over the interval since
    `previous`, when there is one and requests finished in it."""
    metrics: dict[str, tuple[float, str]] = {ADAPTERS_LOADED: (adapters_loaded, "Count")}
    if WAITING in current.values:
        metrics[REQUESTS_WAITING] = (current.values[WAITING], "Count")
    if RUNNING in current.values:
        metrics[REQUESTS_RUNNING] = (current.values[RUNNING], "Count")
    if KV_CACHE in current.values:
        metrics[KV_CACHE_USAGE] = (round(current.values[KV_CACHE] * 100, 3), "Percent")
    if previous is not None and current.at > previous.at:
        tokens = current.values.get(GENERATION_TOKENS, 0.0) - previous.values.get(GENERATION_TOKENS, 0.0)
        if tokens >= 0:
            metrics[GENERATION_TOKENS_PER_SECOND] = (round(tokens / (current.at - previous.at), 3), "Count/Second")
        for histogram, prefix, quantiles in ((TTFT, TTFT_PREFIX, TTFT_QUANTILES), (E2E, E2E_LATENCY_PREFIX, E2E_QUANTILES)):
            delta = _bucket_delta(previous, current, histogram)
            for percent in quantiles:
                value = histogram_quantile(delta.items(), percent / 100) if delta else None
                if value is not None:
                    metrics[quantile_metric(prefix, percent)] = (round(value * 1000, 3), "Milliseconds")
    return _emf(timestamp_ms, dimensions(model, stage, target), metrics)


def _emf(timestamp_ms: int, dimension_values: dict[str, str], metrics: dict[str, tuple[float, str]]) -> dict[str, Any]:
    """An EMF record: the metrics' values under one dimension set (all the given dimensions)."""
    return {
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": [list(dimension_values)],
                    "Metrics": [{"Name": name, "Unit": unit} for name, (_, unit) in metrics.items()],
                }
            ],
        },
        **dimension_values,
        **{name: value for name, (value, _) in metrics.items()},
    }


def boot_emf_records(record: BootRecord, *, model: str, stage: str, target: str, timestamp_ms: int) -> list[dict[str, Any]]:
    """One EMF record per boot phase: `BootSeconds` with the phase as a fourth dimension."""
    return [
        _emf(timestamp_ms, {**dimensions(model, stage, target), PHASE_DIMENSION: phase}, {BOOT_SECONDS: (seconds, "Seconds")})
        for phase, seconds in record.phases.items()
    ]


def start_publisher(
    fetch_metrics: Callable[[], str], adapters_loaded: Callable[[], int], settings: EntrypointSettings, stop: threading.Event
) -> MetricsPublisher:
    """A publisher for this container's model, stage, target and interval, started."""
    plan = settings.plan
    publisher = MetricsPublisher(
        fetch_metrics,
        adapters_loaded,
        model=plan.model_name,
        stage=plan.stage,
        target=settings.target,
        interval=settings.metrics_seconds,
        stop=stop,
    )
    publisher.start()
    return publisher


class MetricsPublisher(threading.Thread):
    """Scrapes `/metrics` every `interval` seconds and prints one EMF line per scrape."""

    def __init__(
        self,
        fetch_metrics: Callable[[], str],
        adapters_loaded: Callable[[], int],
        *,
        model: str,
        stage: str,
        target: str,
        interval: float,
        stop: threading.Event,
        emit: Callable[[str], None] = lambda line: print(line, flush=True),
    ):
        super().__init__(name="metrics", daemon=True)
        self.fetch_metrics, self.adapters_loaded = fetch_metrics, adapters_loaded
        self.model, self.stage, self.target, self.interval = model, stage, target, interval
        self.stop_event, self.emit = stop, emit

    def run(self) -> None:
        previous = None
        while not self.stop_event.wait(self.interval):
            try:
                current = parse_vllm_metrics(self.fetch_metrics(), time.monotonic())
            except Exception as exc:  # a missed scrape must not end the publisher
                log.warning("metrics scrape failed: %s", exc)
                continue
            record = emf_record(
                previous,
                current,
                model=self.model,
                stage=self.stage,
                target=self.target,
                adapters_loaded=self.adapters_loaded(),
                timestamp_ms=int(time.time() * 1000),
            )
            self.emit(json.dumps(record, separators=(",", ":")))
            previous = current
