"""Fleet status: per-model rows assembled from plain observations. Pure, no I/O.

`llmfleet status` gathers the observations at the edges (ECS, ELBv2, SageMaker and
CloudWatch through boto3 for an AWS account; the local fleet's state and its server's
`/metrics` and `/llmfleet/adapters` for `llmfleet local`) and hands them here, so every
figure an operator reads is computed by functions that tests call with plain data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

from llmfleet.model_store.planning.catalog import instance
from llmfleet.model_store.errors import EXIT_REFUSED, LlmfleetError
from llmfleet.model_store.contract.telemetry import histogram_quantile
from llmfleet.model_store.contract.plan import ServingPlan
from llmfleet.model_store.store.registry import RegistryState
from llmfleet.model_store.contract.targets import TARGETS

# vLLM's Prometheus names (vllm/v1/metrics/loggers.py, v0.32, 2026-10).
VLLM_WAITING = "vllm:num_requests_waiting"
VLLM_RUNNING = "vllm:num_requests_running"
VLLM_E2E_BUCKET = "vllm:e2e_request_latency_seconds_bucket"
VLLM_TTFT_BUCKET = "vllm:time_to_first_token_seconds_bucket"

LOCAL = "local"  # `llmfleet local`: a stand-in on this machine, priced as its plan
STATUS_TARGETS = (*TARGETS, LOCAL)
# Tags the stacks put on every taggable resource of a model (stacks/fleet.py); `llmfleet
# status --aws` finds a model's ECS service, target group and SageMaker endpoint by them.
TAG_FLEET, TAG_STAGE, TAG_MODEL = "llmfleet:fleet", "llmfleet:stage", "llmfleet:model"


class StatusError(LlmfleetError):
    """An observation status cannot use; the message names the field and the value."""

    exit_code = EXIT_REFUSED


@dataclass(frozen=True)
class Deployment:
    """What the orchestrator reports for one model on one target."""

    target: str  # ecs | sagemaker | local
    name: str  # ECS service, SageMaker endpoint, or the local server's URL
    desired: int
    running: int
    instance_type: str
    pending: int = 0
    healthy: int | None = None  # load-balancer healthy targets, when there is a load balancer
    state: str | None = None  # e.g. SageMaker's EndpointStatus, or "serving" / "starting" locally

    def __post_init__(self) -> None:
        if self.target not in STATUS_TARGETS:
            raise StatusError(f"deployment {self.name!r}: target {self.target!r} is not one of {list(STATUS_TARGETS)}")
        for name in ("desired", "running", "pending"):
            if getattr(self, name) < 0:
                raise StatusError(f"deployment {self.name!r}: {name} {getattr(self, name)} is negative")


@dataclass(frozen=True)
class ServerAdapters:
    """What one server says it has loaded (`GET /llmfleet/adapters`), or why it could not say."""

    server_id: str
    adapters: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None
    boot: str | None = None  # how its last start went (model_store/ops/boot_log.py: describe_boot)


@dataclass(frozen=True)
class Metrics:
    """Load figures of one model: queue depth and latency percentiles (None: no data)."""

    queue_depth: float | None = None
    running_requests: float | None = None
    ttft_p50_ms: float | None = None
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    last_boot_seconds: float | None = None  # container start to healthy, the newest start


@dataclass(frozen=True)
class ServerRow:
    server_id: str
    adapters: dict[str, str]
    expected: dict[str, str]
    drift: list[str]  # adapter names whose loaded version differs from what the registry says
    error: str | None
    boot: str | None = None


@dataclass(frozen=True)
class ModelStatus:
    """One row of `llmfleet status`: a model on one target."""

    model: str
    stage: str
    target: str
    name: str
    state: str | None
    desired: int
    running: int
    pending: int
    healthy: int | None
    instance_type: str
    promoted: dict[str, str]
    servers: list[ServerRow]
    metrics: Metrics
    unit_cost_per_hour_usd: float
    cost_per_hour_usd: float
    standin: bool = False

    def to_json(self) -> dict:
        return asdict(self)


def metrics_from_prometheus(samples: Iterable[tuple[str, Mapping[str, str], float]]) -> Metrics:
    """Metrics from vLLM `/metrics` samples (name, labels, value), summed over label sets.

    A server serves one base model; its adapters share the engine's queue, so every label
    set (base model and adapters) counts.
    """
    waiting = running = None
    e2e: dict[float, float] = {}
    ttft: dict[float, float] = {}
    for name, labels, value in samples:
        if name == VLLM_WAITING:
            waiting = (waiting or 0.0) + value
        elif name == VLLM_RUNNING:
            running = (running or 0.0) + value
        elif name in (VLLM_E2E_BUCKET, VLLM_TTFT_BUCKET):
            target = e2e if name == VLLM_E2E_BUCKET else ttft
            bound = float(labels["le"])
            target[bound] = target.get(bound, 0.0) + value
    return Metrics(
        queue_depth=waiting,
        running_requests=running,
        ttft_p50_ms=_ms(histogram_quantile(ttft.items(), 0.5)),
        latency_p50_ms=_ms(histogram_quantile(e2e.items(), 0.5)),
        latency_p99_ms=_ms(histogram_quantile(e2e.items(), 0.99)),
    )


def metrics_from_cloudwatch(latest: Mapping[str, float | None], names: Mapping[str, str]) -> Metrics:
    """Metrics from the newest CloudWatch datapoint of each metric.

    `names` maps our fields (queue_depth, running_requests, ttft_p50_ms, latency_p50_ms,
    latency_p99_ms) to the metric ids the caller queried; absent ids give None.
    """
    unknown = sorted(set(names) - set(Metrics.__dataclass_fields__))
    if unknown:
        raise StatusError(f"metric fields {unknown} are not status fields; allowed: {sorted(Metrics.__dataclass_fields__)}")
    return Metrics(**{field_name: latest.get(metric_id) for field_name, metric_id in names.items()})


def server_rows(servers: Iterable[ServerAdapters], expected: Mapping[str, Mapping[str, str]]) -> list[ServerRow]:
    """Each server's loaded adapters beside what the registry wants it to serve."""
    rows = []
    for server in sorted(servers, key=lambda s: s.server_id):
        wanted = dict(expected.get(server.server_id, {}))
        loaded = dict(server.adapters)
        drift = [] if server.error else sorted(n for n in set(wanted) | set(loaded) if wanted.get(n) != loaded.get(n))
        rows.append(ServerRow(server.server_id, loaded, wanted, drift, server.error, server.boot))
    return rows


def model_status(
    *,
    model: str,
    stage: str,
    deployment: Deployment,
    unit_cost_per_hour_usd: float,
    promoted: Mapping[str, str],
    servers: Iterable[ServerAdapters] = (),
    expected: Mapping[str, Mapping[str, str]] | None = None,
    metrics: Metrics = Metrics(),
    standin: bool = False,
) -> ModelStatus:
    """Assemble one status row; $/h counts the servers that run (each bills by the hour)."""
    if unit_cost_per_hour_usd < 0:
        raise StatusError(f"model {model!r}: unit_cost_per_hour_usd {unit_cost_per_hour_usd} is negative")
    return ModelStatus(
        model=model,
        stage=stage,
        target=deployment.target,
        name=deployment.name,
        state=deployment.state,
        desired=deployment.desired,
        running=deployment.running,
        pending=deployment.pending,
        healthy=deployment.healthy,
        instance_type=deployment.instance_type,
        promoted=dict(sorted(promoted.items())),
        servers=server_rows(servers, expected or {}),
        metrics=metrics,
        unit_cost_per_hour_usd=unit_cost_per_hour_usd,
        cost_per_hour_usd=round(unit_cost_per_hour_usd * deployment.running, 4),
        standin=standin,
    )


def unit_cost_per_hour(plan: ServingPlan, target: str) -> float:
    """On-demand $/h of one server of `plan` on `target`, from the plan's catalog prices.

    The local fleet reports what one server on each of the plan's targets would cost in AWS
    (the plan's own figure): it is a preview of the bill, not the laptop's.
    """
    if target == LOCAL:
        return plan.cost_per_hour_usd
    if target not in plan.targets:
        raise StatusError(f"model {plan.model_name!r}: target {target!r} is not in its plan's targets {plan.targets}")
    chosen = instance(plan.instance_type)
    price = TARGETS[target].price(chosen)
    if price is None:  # the planner never picks one for SageMaker; a plan made with another catalog might
        raise StatusError(f"model {plan.model_name!r}: {chosen.name} has no {target} price in the GPU catalog")
    return price


def fleet_cost_per_hour(rows: Iterable[ModelStatus]) -> float:
    return round(sum(row.cost_per_hour_usd for row in rows), 4)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def promoted_versions(state: RegistryState) -> dict[str, str]:
    """Adapter -> the version the registry promoted (a canary shows its share and the other version)."""
    return {
        name: entry.version + (f" ({entry.fraction:.0%}, else {entry.previous_version})" if entry.fraction < 1 else "")
        for name, entry in state.adapters.items()
    }
