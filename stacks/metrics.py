"""The metric contract between the serving container and the stacks.

The entrypoint (containers/entrypoint/metrics.py) prints CloudWatch embedded-metric-format
lines on stdout; the log driver ships them to CloudWatch Logs, which extracts the metrics.
Autoscaling, alarms and dashboards read them through `fleet_metric`. Both sides keep to the
table in docs/stacks.md.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch

from model_store.plan import ServingPlan

NAMESPACE = "LLMFleet"
# No server id: values are averaged over servers, and a scaled-in server leaves no stale series.
DIMENSIONS = ("Model", "Stage")

REQUESTS_WAITING = "RequestsWaiting"  # vllm:num_requests_waiting, Count (gauge per server)
REQUESTS_RUNNING = "RequestsRunning"  # vllm:num_requests_running, Count
KV_CACHE_USAGE = "KvCacheUsage"  # vllm:kv_cache_usage_perc x 100, Percent
TTFT_P90 = "TimeToFirstTokenP90"  # Milliseconds, over the publish interval
GENERATION_TOKENS_PER_SECOND = "GenerationTokensPerSecond"  # Count/Second
ADAPTERS_LOADED = "AdaptersLoaded"  # Count


def fleet_metric(
    plan: ServingPlan,
    name: str,
    *,
    statistic: str = "Average",
    period: cdk.Duration = cdk.Duration.minutes(1),
) -> cloudwatch.Metric:
    """One of the container's EMF metrics for a model."""
    return cloudwatch.Metric(
        namespace=NAMESPACE,
        metric_name=name,
        dimensions_map={"Model": plan.model_name, "Stage": plan.stage},
        statistic=statistic,
        period=period,
    )
