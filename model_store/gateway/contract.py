"""The gateway's contract: the names the gateway stack writes and the gateway container reads.

One fleet-wide OpenAI endpoint (LiteLLM's proxy in config mode, containers/gateway/) routes
by `model` to each model's internal load balancer or SageMaker endpoint, checks a key per
consumer, holds rate limits in Redis and writes usage to Postgres. Every name both sides use
is a constant or a function here, so the stack and the container cannot drift apart.
"""

from __future__ import annotations

import math
import re

from pydantic import BaseModel, ConfigDict

GATEWAY_PORT = 4000  # LiteLLM's proxy default
GATEWAY_HEALTH_PATH = "/health/liveliness"  # LiteLLM's liveness route: no upstream call, no key
# Where the proxy listens: defaults 0.0.0.0 and GATEWAY_PORT in a task; the local fleet binds loopback.
GATEWAY_HOST_ENV = "LLMFLEET_GATEWAY_HOST"
GATEWAY_PORT_ENV = "LLMFLEET_GATEWAY_PORT"
# Read by `llmfleet local` only: the interpreter with requirements/gateway-lock.txt installed.
GATEWAY_PYTHON_ENV = "LLMFLEET_GATEWAY_PYTHON"

# The image: built from the repository root with this Dockerfile, its base passed (pinned by digest)
# as this build argument.
GATEWAY_DOCKERFILE = "containers/gateway/Dockerfile"
GATEWAY_BASE_IMAGE_ARG = "PYTHON_IMAGE"

# The routes, fallbacks and consumers' policy (no keys): JSON made by
# model_store/gateway/config.py from the plans, with the stack's CDK tokens for DNS names inside.
CONFIG_ENV = "LLMFLEET_GATEWAY_CONFIG"
# Secrets Manager id of {consumer: [sha256 hex of a key, ...]}; re-read every KEYS_REFRESH_SECONDS.
KEYS_SECRET_ENV = "LLMFLEET_GATEWAY_KEYS_SECRET"
KEYS_REFRESH_SECONDS = 60
# redis:// locally, rediss://host:port in AWS (ElastiCache in-transit encryption).
REDIS_URL_ENV = "LLMFLEET_GATEWAY_REDIS_URL"
# The usage database: the stack injects each field of the RDS-generated secret as its own ECS
# secret (no variable names the secret itself; the task needs no Secrets Manager call for it).
DB_HOST_ENV = "LLMFLEET_GATEWAY_DB_HOST"
DB_PORT_ENV = "LLMFLEET_GATEWAY_DB_PORT"
DB_USER_ENV = "LLMFLEET_GATEWAY_DB_USER"
DB_PASSWORD_ENV = "LLMFLEET_GATEWAY_DB_PASSWORD"
DB_NAME_ENV = "LLMFLEET_GATEWAY_DB_NAME"
# Which field of the RDS-generated secret (JSON) each of those variables carries.
DB_SECRET_FIELDS = {
    DB_HOST_ENV: "host",
    DB_PORT_ENV: "port",
    DB_USER_ENV: "username",
    DB_PASSWORD_ENV: "password",
    DB_NAME_ENV: "dbname",
}
DEFAULT_DB_NAME = "llmfleet"
# Read by `llmfleet usage`, not the task: a libpq URL of the usage database.
USAGE_DATABASE_URL_ENV = "LLMFLEET_GATEWAY_DATABASE_URL"

# Usage as CloudWatch embedded-metric-format lines on stdout (no PutMetricData permission needed).
METRICS_NAMESPACE = "LLMFleet/Gateway"
# Fleet and Stage first: two fleets (or stages) in one account and region publish apart.
METRIC_DIMENSIONS = ("Fleet", "Stage", "Consumer", "Model")
METRIC_NAMES = ("Requests", "PromptTokens", "CompletionTokens", "Errors", "LatencyMs")

# The paths a client calls: the gateway refuses every other path its key reaches (LiteLLM's admin
# and management routes), and the public load balancer forwards only these and the health path.
GATEWAY_CLIENT_PATHS = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/images/generations",
    "/v1/models",
)

# The largest request body the gateway forwards (413 above, before the key's body is read): a
# multimodal model's inline media and envelope (model_store/request_limits.py) with a long context;
# each model's own front door then applies its plan's exact bound.
GATEWAY_MAX_BODY_BYTES = 48 * 1024 * 1024

# What the task role needs beyond reading the keys secret.
SAGEMAKER_INVOKE_ACTIONS = ("sagemaker:InvokeEndpoint", "sagemaker:InvokeEndpointWithResponseStream")
KEYS_SECRET_ACTIONS = ("secretsmanager:GetSecretValue",)

# Ports the gateway's security group reaches: model load balancers, Redis, Postgres.
UPSTREAM_HTTP_PORT = 80
REDIS_PORT = 6379
POSTGRES_PORT = 5432


def upstream_key_env(model: str) -> str:
    """The env name (an ECS secret) carrying `model`'s API key into the gateway task."""
    return "LLMFLEET_UPSTREAM_KEY_" + re.sub(r"[^A-Z0-9]", "_", model.upper())


def gateway_keys_secret_name(fleet: str, stage: str) -> str:
    """The Secrets Manager name of a fleet stage's consumer key hashes."""
    return f"llmfleet/{fleet}/{stage}/gateway-keys"


# --- sizing ------------------------------------------------------------------------------

# One task: 1 vCPU, 2 GiB (LiteLLM's proxy measured 350-420 MB resident, 11-17 s to start).
TASK_CPU_UNITS = 1024
TASK_MEMORY_MIB = 2048
# Requests per second one 1-vCPU task holds at CPU_TARGET_PERCENT: `make bench` (scripts/benchmarks/
# gateway.py) measured 43-55 req/s at 89-98% of a core, i.e. 28-34 req/s at 60% (2026-12-02, four runs
# on 2 shared cores, stub upstream; ~22-28 ms CPU per request, ~1-1.5 ms per streamed token): the low
# end, rounded down.
REQUESTS_PER_SECOND_PER_TASK = 25.0
CPU_TARGET_PERCENT = 60
MIN_TASKS = 2  # two Availability Zones: one task lost never closes the endpoint


class GatewaySizing(BaseModel):
    """How many gateway tasks to run, of what size, and on what signal to scale them."""

    model_config = ConfigDict(frozen=True)

    cpu_units: int
    memory_mib: int
    min_tasks: int
    max_tasks: int
    cpu_target_percent: int
    reason: str


def gateway_sizing(peak_requests_per_second: float | None) -> GatewaySizing:
    """Tasks for a peak request rate (the sum of the consumers' rpm limits / 60 when every
    consumer has one); without a known peak, the minimum, scaled on CPU up to 4x it."""
    if peak_requests_per_second is None:
        most, reason = 4 * MIN_TASKS, "no peak rate known (a consumer without rpm): scale on CPU"
    else:
        most = max(MIN_TASKS, math.ceil(peak_requests_per_second / REQUESTS_PER_SECOND_PER_TASK))
        reason = (
            f"peak {peak_requests_per_second:g} req/s / {REQUESTS_PER_SECOND_PER_TASK:g} req/s per task "
            f"(1 vCPU at {CPU_TARGET_PERCENT}% CPU, make bench)"
        )
    return GatewaySizing(
        cpu_units=TASK_CPU_UNITS,
        memory_mib=TASK_MEMORY_MIB,
        min_tasks=MIN_TASKS,
        max_tasks=most,
        cpu_target_percent=CPU_TARGET_PERCENT,
        reason=reason,
    )
