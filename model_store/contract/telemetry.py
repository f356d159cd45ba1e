"""The metric contract: what the serving container publishes and what stacks and `status` read.

The entrypoint prints CloudWatch embedded-metric-format lines on stdout (ECS awslogs and
SageMaker ship them to CloudWatch Logs, which extracts the metrics). Autoscaling, alarms,
dashboards and `llmfleet status --aws` read the same names from here, so a rename cannot
silently break scaling.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

NAMESPACE = "LLMFleet"
# Target (ecs | sagemaker) keeps a model served on both from averaging one target's queue
# into the other's scaling. No server id: values are averaged over servers, and a
# scaled-in server leaves no stale series.
DIMENSIONS = ("Model", "Stage", "Target")

REQUESTS_WAITING = "RequestsWaiting"  # vllm:num_requests_waiting, Count (gauge per server)
REQUESTS_RUNNING = "RequestsRunning"  # vllm:num_requests_running, Count
KV_CACHE_USAGE = "KvCacheUsage"  # vllm:kv_cache_usage_perc x 100, Percent
TTFT_PREFIX = "TimeToFirstToken"  # + P50/P90/P99, Milliseconds over the publish interval
TTFT_QUANTILES = (50, 90, 99)
E2E_LATENCY_PREFIX = "E2ELatency"  # + P50/P99, Milliseconds
E2E_QUANTILES = (50, 99)
GENERATION_TOKENS_PER_SECOND = "GenerationTokensPerSecond"  # Count/Second
ADAPTERS_LOADED = "AdaptersLoaded"  # Count
# Seconds each phase of a server's start took (model_store/ops/boot_log.py: BootRecord.phases),
# once per start, with the phase as a fourth dimension.
BOOT_SECONDS = "BootSeconds"
PHASE_DIMENSION = "Phase"


def quantile_metric(prefix: str, percent: int) -> str:
    """`TimeToFirstTokenP90`-style metric names."""
    return f"{prefix}P{percent}"


def dimensions(model: str, stage: str, target: str) -> dict[str, str]:
    return {"Model": model, "Stage": stage, "Target": target}


def histogram_quantile(buckets: Iterable[tuple[float, float]], quantile: float) -> float | None:
    """The `quantile` of a cumulative histogram given as (upper bound, count) pairs.

    Prometheus' own estimate (linear interpolation inside the bucket that holds the rank),
    so the figure matches what a Grafana panel over the same buckets would show. None when
    the histogram is empty; the largest finite bound when the rank falls in +Inf.
    """
    if not 0 <= quantile <= 1:
        raise ValueError(f"quantile {quantile} is outside [0, 1]")
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = quantile * ordered[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound
