"""Sizing for a load: the cheapest fleet the performance model predicts meets the manifest's SLO.

A model with a `load:` section is planned here instead of by `serving.target_concurrency`:
every (instance, TP, max_num_batched_tokens) whose memory fits is run through
model_store.planning.performance at the load split over 1, 2, ... servers, and the cheapest number of
servers that meets the TTFT and inter-token objectives wins. Pure, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from llmfleet.model_store.planning import performance
from llmfleet.model_store.planning.catalog import GpuInstance, instance
from llmfleet.model_store.facts.families import ArchitectureFacts
from llmfleet.model_store.facts.families.quantization import WeightFormat
from llmfleet.model_store.contract.manifest import LoadSpec, ModelSpec
from llmfleet.model_store.planning.performance import Batching, Lengths, Prediction, StepCost
from llmfleet.model_store.contract.plan import PerformancePlan
from llmfleet.model_store.planning.fit import (
    _valid_tp_sizes,
    Candidate,
    Choice,
    hardware_refusal,
    hourly_price,
    PlanError,
)
from llmfleet.model_store.planning.lifecycle import ScalingTargets
from llmfleet.model_store.planning.text import (
    _batched_tokens,
    _memory_at,
    DTYPE_BYTES,
    kv_element_bytes,
    MAX_NUM_SEQS_CAP,
    Sizing,
)

# The chunked-prefill budgets tried: at most the plan's default for the GPU (its activation
# memory is sized for that); smaller ones trade TTFT for shorter decode steps beside a prefill chunk.
BATCHED_TOKENS_GRID = (512, 1024, 2048, 4096, 8192)
MAX_REPLICAS = 100  # serving.max_capacity's bound
# A server is planned at most this share of the rate it saturates at: beyond it the closed-form
# queueing drifts from a step-by-step run of the same model (docs/planner.md) and bursts have no room.
HEADROOM = 0.7


@dataclass(frozen=True)
class Option:
    """One way to serve the load: `replicas` servers of one (instance, TP, budget), and their prediction."""

    instance: GpuInstance
    tp: int
    batched: int
    memory: object  # the plan's MemoryPlan at this instance and TP
    cost: StepCost
    replicas: int
    hourly: float  # the whole fleet's, on every target
    prediction: Prediction

    @property
    def batching(self) -> Batching:
        return Batching(MAX_NUM_SEQS_CAP, self.batched, self.memory.token_capacity)

    def describe(self) -> str:
        return f"{self.replicas} x {self.instance.name} (TP={self.tp}, ${self.hourly:.2f}/h)"


def lengths(load: LoadSpec) -> tuple[Lengths, Lengths]:
    """The prompt and output length distributions, as the performance model takes them."""
    return Lengths(load.prompt_tokens.p50, load.prompt_tokens.p95), Lengths(load.output_tokens.p50, load.output_tokens.p95)


def per_server(load: LoadSpec, replicas: int) -> float:
    """The rate (requests/s) or concurrency one of `replicas` servers takes."""
    total = load.requests_per_second if load.requests_per_second is not None else load.concurrency
    return total / replicas


def predict_at(cost: StepCost, batching: Batching, load: LoadSpec, replicas: int) -> Prediction | None:
    """One server's prediction with the load split evenly over `replicas` servers."""
    (prompt, output), share, q = lengths(load), per_server(load, replicas), load.slo.percentile
    if load.requests_per_second is not None:
        return performance.predict(cost, batching, share, prompt, output, q)
    return performance.predict_closed(cost, batching, share, prompt, output, q)


def meets(prediction: Prediction | None, load: LoadSpec, cost: StepCost, batching: Batching) -> bool:
    """Within both objectives, and within HEADROOM of the rate the server saturates at."""
    return (
        prediction is not None
        and prediction.ttft_q_seconds * 1000 <= load.slo.ttft_ms
        and prediction.itl_q_seconds * 1000 <= load.slo.itl_ms
        and prediction.requests_per_second <= HEADROOM * performance.saturation_rate(cost, batching, *lengths(load))
    )


def fewest_replicas(cost: StepCost, batching: Batching, load: LoadSpec) -> tuple[int, Prediction] | None:
    """The fewest servers whose prediction meets the SLO (bisection: more servers never predict worse)."""
    best = predict_at(cost, batching, load, MAX_REPLICAS)
    if not meets(best, load, cost, batching):
        return None
    low, high = 0, MAX_REPLICAS  # meets(high) holds, meets(low) is not known to
    while high - low > 1:
        middle = (low + high) // 2
        prediction = predict_at(cost, batching, load, middle)
        if meets(prediction, load, cost, batching):
            high, best = middle, prediction
        else:
            low = middle
    return high, best


def floor_reason(cost: StepCost, batching: Batching, load: LoadSpec) -> str:
    """Why no number of servers meets the SLO: what one request alone is predicted to get."""
    alone = performance.predict(cost, batching, 1e-6, *lengths(load), load.slo.percentile)
    if alone is None:
        return "its KV cache does not hold one median request"
    return (
        f"even a lone request gets TTFT p{load.slo.percentile} {alone.ttft_q_seconds * 1000:.0f} ms and ITL "
        f"{alone.itl_q_seconds * 1000:.1f} ms (SLO {load.slo.ttft_ms} ms, {load.slo.itl_ms:g} ms)"
    )


def step_cost_of(
    spec: ModelSpec, arch: ArchitectureFacts, dtype: str, fmt: WeightFormat | None, memory, gpu_instance: GpuInstance, tp: int
) -> StepCost:
    """The model's per-step cost on one GPU of `gpu_instance` at `tp`, from the plan's weight bytes."""
    return performance.step_cost(
        arch, gpu_instance.gpu, tp,
        weights_bytes=memory.weights_bytes, dtype_bytes=DTYPE_BYTES[dtype], fmt=fmt,
        kv_element_bytes=kv_element_bytes(spec.kv_cache_dtype, dtype), link_gb_per_s=performance.link_gb_per_s(gpu_instance.family),
    )  # fmt: skip


def options_for(spec, arch, draft, dtype, fmt, candidate: GpuInstance) -> tuple[list[Option], list[Candidate]]:
    """Every (TP, budget) of one instance type that meets the SLO at its fewest servers, and why the rest did not."""
    refusal = hardware_refusal(spec, dtype, fmt, candidate)
    if refusal is None and not candidate.gpu.hbm_gb_per_s:
        refusal = f"the catalog has no published bandwidth or FLOP rate for {candidate.gpu.name}"
    if refusal:
        return [], [Candidate(instance_type=candidate.name, tp=0, memory=None, why_not=refusal)]
    options, refused = [], []
    price = hourly_price(candidate, spec.serving.targets)
    longest = spec.load.prompt_tokens.p95 + spec.load.output_tokens.p95
    for tp in _valid_tp_sizes(arch, candidate.gpu_count):
        memory = _memory_at(spec, arch, draft, dtype, fmt, candidate.gpu_memory_bytes, tp)
        if memory.kv_cache_bytes_per_gpu <= 0 or memory.token_capacity < longest:
            why = f"TP={tp}: the KV cache ({max(0, memory.token_capacity):,} tokens) does not hold one p95 request ({longest:,})"
            refused.append(Candidate(instance_type=candidate.name, tp=tp, memory=memory, why_not=why, headroom=memory.kv_cache_bytes_per_gpu))
            continue
        cost = step_cost_of(spec, arch, dtype, fmt, memory, candidate, tp)
        budgets = [b for b in BATCHED_TOKENS_GRID if b <= _batched_tokens(candidate.gpu_memory_bytes, spec.max_model_len)]
        found = False
        for batched in budgets:
            batching = Batching(MAX_NUM_SEQS_CAP, batched, memory.token_capacity)
            sized = fewest_replicas(cost, batching, spec.load)
            if sized:
                found = True
                replicas, prediction = sized
                options.append(Option(candidate, tp, batched, memory, cost, replicas, replicas * price, prediction))
        if not found:
            batching = Batching(MAX_NUM_SEQS_CAP, budgets[-1], memory.token_capacity)
            why = f"TP={tp}: {floor_reason(cost, batching, spec.load)}"
            refused.append(Candidate(instance_type=candidate.name, tp=tp, memory=memory, why_not=why, headroom=memory.kv_cache_bytes_per_gpu))
    return options, refused


def rank_key(option: Option) -> tuple:
    """Cheapest fleet first; then fewer GPUs, then the shorter p-th percentile TTFT."""
    return (round(option.hourly, 4), option.replicas * option.tp, option.prediction.ttft_q_seconds)


def size_for_load(spec: ModelSpec, arch: ArchitectureFacts, draft, dtype: str, fmt: WeightFormat | None, catalog: Sequence[GpuInstance]) -> Sizing:
    """The cheapest fleet predicted to meet spec.load's SLO; PlanError with the nearest misses when none does."""
    pool = [instance(spec.serving.instance_type)] if spec.serving.instance_type else list(catalog)
    options, refused = [], []
    for candidate in pool:
        found, why = options_for(spec, arch, draft, dtype, fmt, candidate)
        options += found
        refused += why
    if not options:
        nearest = sorted(refused, key=lambda c: (c.memory is None, -c.headroom))[:3]  # sized ones first, most KV room first
        details = "; ".join(f"{c.instance_type} {c.why_not}" for c in nearest)
        raise PlanError(f"model {spec.name!r}: no fleet of up to {MAX_REPLICAS} servers is predicted to meet the load's SLO: {details}")
    options.sort(key=rank_key)
    best = options[0]
    # The runner-up is the cheapest on another GPU (else another instance type): the comparison that informs.
    runner_up = next((o for o in options if o.instance.gpu != best.instance.gpu), None) or next(
        (o for o in options if o.instance.name != best.instance.name), None
    )
    return _sizing(spec, best, runner_up, len(options), refused)


def _sizing(spec: ModelSpec, best: Option, runner_up: Option | None, fitting: int, refused: list[Candidate]) -> Sizing:
    load, p = spec.load, best.prediction
    q, fleet = load.slo.percentile, best.replicas
    rate = p.requests_per_second * fleet
    tokens_per_second = p.output_tokens_per_second * fleet
    usd_per_million = best.hourly / (tokens_per_second * 3600) * 1e6
    per_server_max = _max_rate_within_slo(spec, best)
    runner = None
    if runner_up is not None:
        runner = f"{runner_up.describe()}: {_why_lost(best, runner_up)}"
    uncertainty = performance.uncertainty(best.instance.gpu)
    performance_plan = PerformancePlan(
        replicas=fleet,
        requests_per_second=round(rate, 3),
        concurrency=round(p.requests_per_second * (p.ttft_p50_seconds + load.output_tokens.p50 * p.step_seconds) * fleet, 2),
        percentile=q,
        ttft_p50_ms=round(p.ttft_p50_seconds * 1000, 1),
        ttft_ms=round(p.ttft_q_seconds * 1000, 1),
        itl_mean_ms=round(p.step_seconds * 1000, 2),
        itl_ms=round(p.itl_q_seconds * 1000, 2),
        output_tokens_per_second=round(tokens_per_second, 1),
        usd_per_million_output_tokens=round(usd_per_million, 3),
        max_requests_per_second_per_server=round(per_server_max, 3),
        uncertainty=uncertainty,
        runner_up=runner,
    )
    cheaper = sorted(
        (c for c in refused if c.why_not and hourly_price(instance(c.instance_type), spec.serving.targets) < best.hourly),
        key=lambda c: hourly_price(instance(c.instance_type), spec.serving.targets),
    )
    choice = Choice(instance=best.instance, tp=best.tp, memory=best.memory, fitting=fitting, cheaper_refused=cheaper)
    # Sized for the busiest the server is allowed to get, its scaling target, not only its share of the load.
    at_target = performance.predict(best.cost, best.batching, per_server_max, *lengths(load), q)
    busiest = max(p.running, at_target.running if at_target else 0.0)
    max_num_seqs = min(MAX_NUM_SEQS_CAP, max(8, 2 ** math.ceil(math.log2(max(1.0, 2 * busiest)))))
    reasons = [
        f"load {_describe_load(load)}: {fleet} x {best.instance.name} (TP={best.tp}) predicted TTFT p50 "
        f"{performance_plan.ttft_p50_ms:.0f} ms, p{q} {performance_plan.ttft_ms:.0f} ms (SLO {load.slo.ttft_ms}); ITL mean "
        f"{performance_plan.itl_mean_ms:.1f} ms, p{q} {performance_plan.itl_ms:.1f} ms (SLO {load.slo.itl_ms:g}); "
        f"{tokens_per_second:,.0f} output tokens/s; ${usd_per_million:.2f} per million output tokens "
        f"(±{uncertainty:.0%}: {'calibrated on' if uncertainty == performance.MEASURED_GPU_UNCERTAINTY else 'never measured on'} "
        f"{best.instance.gpu.name})",
        f"max_num_seqs {max_num_seqs}: twice the {busiest:.1f} sequences predicted decoding at once at the most "
        f"one server takes within the SLO ({per_server_max:.2f} requests/s, its scaling target), a power of two; "
        f"max_num_batched_tokens {best.batched}: the chunked-prefill budget of the cheapest choice (ties: the shortest TTFT)",
    ]
    if runner:
        reasons.append(f"runner-up {runner}")
    queue = _queue_depth(spec, best)
    scaling = ScalingTargets(
        queue_depth=queue,
        requests_per_minute=max(1, math.floor(per_server_max * 60)),
        replicas=fleet,
        reason=(
            f"scale on {math.floor(per_server_max * 60)} requests/min per server (the most one takes within the SLO) "
            f"or more than {queue} waiting; the load needs {fleet} server(s), so max_capacity is at least that"
        ),
    )
    return Sizing(
        choice=choice, max_num_seqs=max_num_seqs, max_num_batched_tokens=best.batched, reasons=reasons,
        performance=performance_plan, scaling=scaling,
    )  # fmt: skip


def _describe_load(load: LoadSpec) -> str:
    rate = f"{load.requests_per_second:g} requests/s" if load.requests_per_second is not None else f"{load.concurrency} in flight"
    return (
        f"{rate}, prompts p50 {load.prompt_tokens.p50} / p95 {load.prompt_tokens.p95}, "
        f"outputs p50 {load.output_tokens.p50} / p95 {load.output_tokens.p95} tokens"
    )


def _why_lost(best: Option, other: Option) -> str:
    if other.hourly > best.hourly:
        cheaper_server = other.hourly / other.replicas < best.hourly / best.replicas
        why = f"its servers are cheaper but {other.replicas} are needed" if cheaper_server else "dearer servers"
        return f"${other.hourly - best.hourly:.2f}/h more ({why})"
    return "the same price, with more GPUs or a longer TTFT"


def _queue_depth(spec: ModelSpec, option: Option) -> int:
    """Waiting requests a server can hold and still start the last within the TTFT SLO: the SLO's
    room beyond the predicted median TTFT, in median-prompt prefills."""
    load, p = spec.load, option.prediction
    prefill = performance.prefill_seconds(
        option.cost, option.batching, load.prompt_tokens.p50, p.running, load.prompt_tokens.p50 + load.output_tokens.p50 / 2
    )
    return max(1, math.floor((load.slo.ttft_ms / 1000 - p.ttft_p50_seconds) / prefill))


def _max_rate_within_slo(spec: ModelSpec, option: Option) -> float:
    """The highest open-loop rate one server of `option` takes within the SLO (bisection), requests/s."""
    load, cost, batching = spec.load, option.cost, option.batching
    ok = lambda rate: meets(performance.predict(cost, batching, rate, *lengths(load), load.slo.percentile), load, cost, batching)  # noqa: E731
    low, high = 0.0, performance.saturation_rate(cost, batching, *lengths(load))
    while high - low > performance.RATE_PRECISION * high:
        middle = (low + high) / 2
        low, high = (middle, high) if ok(middle) else (low, middle)
    return low
