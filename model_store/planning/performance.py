"""How fast a planned server is: step times from FLOPs and bytes, then latency and throughput at a load.

Pure arithmetic, no I/O. One engine step of vLLM runs every running sequence's next token
(decode) and up to `max_num_batched_tokens` of prompt (chunked prefill) through the model
once. Its time is a roofline: the larger of the FLOPs over the GPU's dense tensor rate and
the bytes read (the weights once, the experts the step's tokens touch, every sequence's KV
cache at its context length) over its HBM bandwidth, each at a calibrated efficiency, plus a
fixed cost per step and per layer (scheduling, sampling, small kernels) and, with tensor
parallelism, two all-reduces per layer.

Two views of a load use that step time: `simulate_burst` / `simulate_arrivals` step requests
through vLLM's scheduler one step at a time (exact for the step model; what a load test does),
and `predict` answers a steady load in closed form (what the planner searches with).

The efficiencies were fitted to the bursts measured on an H200 (tests/data/gpu_measurements.json,
vLLM 0.26); tests/unit/test_performance_calibration.py holds the model to them and states
the error per measurement. GPUs never measured keep the H200's efficiencies: see
`UNMEASURED_GPU_UNCERTAINTY`.
"""

from __future__ import annotations

import collections
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llmfleet.model_store.planning.catalog import Gpu
from llmfleet.model_store.errors import LlmfleetError
from llmfleet.model_store.facts.families import ArchitectureFacts
from llmfleet.model_store.facts.families.quantization import WeightFormat

# Fitted on the H200 bursts (see the module docstring); the fit's error per measurement is in
# docs/planner.md and tests/unit/test_performance_calibration.py.
BANDWIDTH_EFFICIENCY = 0.94  # share of published HBM bandwidth a decode step reaches
COMPUTE_EFFICIENCY = 0.61  # share of published dense tensor FLOP/s a prefill step reaches
STEP_OVERHEAD_SECONDS = 0.00044  # per engine step: scheduler, sampler, launches (CUDA graphs on)
LAYER_OVERHEAD_SECONDS = 0.000057  # per layer and step: the small kernels (norms, rotary, attention metadata)
# Quantized weights are read more slowly than their bytes say: the matmul kernels dequantize as
# they go (at small batches they are not bandwidth-bound). A factor on the weight bytes per
# storage width, fitted on one measurement each (mistral-small-24b-fp8, llama31-8b-w4a16).
QUANTIZED_READ_FACTOR = {"8-bit": 1.16, "sub-byte": 2.12}
REQUEST_OVERHEAD_SECONDS = 0.049  # per request, before its first token: HTTP, tokenizer, detokenizer
# Two all-reduces per layer at TP > 1, each a latency plus a ring's 2 (tp - 1) / tp x the step's
# activations (tokens x hidden x 2 B) over the GPUs' link. NCCL's small-message latency is ~10 us
# (nccl-tests all_reduce_perf). Links, per GPU and direction: NVLink 3 (A100) 300 GB/s, NVLink 4
# (H100, H200) 450 GB/s, NVLink 5 (B200) 900 GB/s (NVIDIA datasheets: 600 / 900 / 1,800 GB/s both
# ways); the G instances have no NVLink: PCIe Gen3 x16 (g4dn) ~16 GB/s, Gen4 x16 ~32 GB/s. NCCL
# reaches about LINK_EFFICIENCY of that. Not calibrated: every measurement is TP=1.
ALLREDUCE_SECONDS = 10e-6
LINK_GB_PER_S = {"p4d": 300, "p4de": 300, "p5": 450, "p5e": 450, "p5en": 450, "p6-b200": 900, "g4dn": 16}
PCIE_GEN4_GB_PER_S = 32
LINK_EFFICIENCY = 0.7
MEASURED_GPUS = ("NVIDIA H200",)
RATE_PRECISION = 1e-4  # bisections on an arrival rate stop within this share of it
# On the H200 the fit's held figures are within 13 % but for TTFT p95 at 128 in flight (-21 %).
# The efficiencies move with the GPU generation (kernels, clocks, cache sizes): off the H200 a
# wider error is assumed, a stated guess rather than a measured spread, until a run says otherwise.
MEASURED_GPU_UNCERTAINTY = 0.20
UNMEASURED_GPU_UNCERTAINTY = 0.40


class PerformanceError(LlmfleetError):
    """A GPU or model the performance model has no figures for (the plan is refused, exit 1)."""


@dataclass(frozen=True)
class StepCost:
    """What a model costs one GPU of its tensor-parallel group per step, token and context token."""

    dense_bytes: float  # weights every step reads once (attention, dense MLP, shared experts, LM head)
    expert_bytes: float  # all routed experts, of which a step reads those its tokens are routed to
    num_experts: int
    experts_per_token: int
    flops_per_token: float  # 2 x active parameters (the matmuls), this GPU's share
    attention_flops_per_context_token: float  # QK^T and PV per (query token, context token), this GPU's share
    kv_layers: tuple  # the model's KvLayers: windows cap what a step reads
    kv_element_bytes: int
    tp: int
    layers: int
    weight_read_factor: float  # QUANTIZED_READ_FACTOR of the format, 1 for 16-bit weights
    hidden_size: int
    link_bytes_per_second: float  # between the GPUs of the TP group (LINK_GB_PER_S)
    flops_per_second: float  # published dense rate of the format's compute path
    bytes_per_second: float


def link_gb_per_s(instance_family: str) -> float:
    """The GPU-to-GPU bandwidth, per direction, of an instance family (LINK_GB_PER_S)."""
    return LINK_GB_PER_S.get(instance_family, PCIE_GEN4_GB_PER_S)


def step_cost(
    arch: ArchitectureFacts,
    gpu: Gpu,
    tp: int,
    *,
    link_gb_per_s: float = PCIE_GEN4_GB_PER_S,
    weights_bytes: int,
    dtype_bytes: int,
    fmt: WeightFormat | None,
    kv_element_bytes: int,
) -> StepCost:
    """The per-GPU cost of `arch` served at `tp` on `gpu`, from the plan's exact weight bytes.

    Bytes split between parts by their parameter counts at the format's bytes per weight;
    what a decode step does not read (embedding rows other than the batch's, a vision encoder)
    is left out. FP8 weights use the FP8 tensor rate where the GPU has one."""
    if not gpu.hbm_gb_per_s or not gpu.tflops_16bit:
        raise PerformanceError(f"{gpu.name}: the catalog has no bandwidth or FLOP rate for it (Gpu.speed_source)")
    params = arch.parameters
    per_weight = fmt.part_bytes() if fmt else {}
    size = lambda part: params.part(part) * per_weight.get(part, dtype_bytes)  # noqa: E731
    parts = ("embeddings", "lm_head", "attention", "dense_mlp", "experts", "shared_experts", "router", "norms", "vision")
    scale = weights_bytes / max(1.0, sum(size(part) for part in parts))
    unread = size("vision") + (size("embeddings") if params.lm_head else 0)
    experts = size("experts") * scale
    dense = sum(size(part) for part in parts) * scale - experts - unread * scale
    moe = arch.moe
    active = params.total() - params.vision - (params.embeddings if params.lm_head else 0) - params.experts
    if moe:
        active += params.experts * moe.experts_per_token / moe.num_experts
    attention_layers = sum(layer.count for layer in arch.kv_layers if layer.kind != "state")
    fp8 = fmt is not None and fmt.method == "fp8" and gpu.tflops_fp8 > 0
    return StepCost(
        dense_bytes=dense / tp,
        expert_bytes=experts / tp,
        num_experts=moe.num_experts if moe else 0,
        experts_per_token=moe.experts_per_token if moe else 0,
        flops_per_token=2 * active / tp,
        attention_flops_per_context_token=4 * arch.num_attention_heads * arch.head_dim * attention_layers / tp,
        kv_layers=arch.kv_layers,
        kv_element_bytes=kv_element_bytes,
        tp=tp,
        layers=arch.num_layers,
        weight_read_factor=read_factor(fmt),
        hidden_size=arch.hidden_size,
        link_bytes_per_second=link_gb_per_s * 1e9,
        flops_per_second=(gpu.tflops_fp8 if fp8 else gpu.tflops_16bit) * 1e12,
        bytes_per_second=gpu.hbm_gb_per_s * 1e9,
    )


def read_factor(fmt: WeightFormat | None) -> float:
    """How much slower than its bytes a format's weights are read (QUANTIZED_READ_FACTOR)."""
    if fmt is None or min(fmt.part_bytes().values(), default=2) >= 2:
        return 1.0
    return QUANTIZED_READ_FACTOR["sub-byte" if min(fmt.part_bytes().values()) < 1 else "8-bit"]


def distinct_experts(num_experts: int, experts_per_token: int, tokens: float) -> float:
    """Expected experts of one layer that `tokens` tokens route to, each picking `experts_per_token`
    of `num_experts` uniformly: E x (1 - (1 - k/E)^n). A step reads only these experts' weights."""
    if num_experts == 0:
        return 0.0
    return num_experts * (1 - (1 - experts_per_token / num_experts) ** tokens)


def kv_read_bytes(cost: StepCost, context: float) -> float:
    """KV bytes one sequence's attention reads per step at `context` tokens on one GPU (windowed layers read their window)."""
    return sum(
        layer.count * layer.bytes_per_token(cost.tp, cost.kv_element_bytes) * min(context, layer.window or context)
        for layer in cost.kv_layers
        if layer.kind != "state"
    )


def attended_tokens(cost: StepCost, context: float) -> float:
    """Context tokens a query attends to, averaged over the attention layers (windows cap it)."""
    layers = [layer for layer in cost.kv_layers if layer.kind != "state"]
    total = sum(layer.count for layer in layers)
    return sum(layer.count * min(context, layer.window or context) for layer in layers) / max(1, total)


def step_seconds(cost: StepCost, *, decodes: float, decode_context: float, prefill: float = 0.0, prefill_context: float = 0.0) -> float:
    """One engine step: `decodes` sequences at `decode_context` tokens each generate a token, and a
    prefill chunk of `prefill` tokens that starts after `prefill_context` tokens of its prompt."""
    tokens = decodes + prefill
    if tokens <= 0:
        return 0.0
    chunk_context = prefill_context + prefill / 2  # a causal chunk's tokens see, on average, half of it
    flops = tokens * cost.flops_per_token + cost.attention_flops_per_context_token * (
        decodes * attended_tokens(cost, decode_context) + prefill * attended_tokens(cost, chunk_context)
    )
    touched = distinct_experts(cost.num_experts, cost.experts_per_token, tokens) / cost.num_experts if cost.num_experts else 0.0
    read = (cost.dense_bytes + cost.expert_bytes * touched) * cost.weight_read_factor + decodes * kv_read_bytes(cost, decode_context)
    read += kv_read_bytes(cost, prefill_context) if prefill else 0.0
    roofline = max(flops / (cost.flops_per_second * COMPUTE_EFFICIENCY), read / (cost.bytes_per_second * BANDWIDTH_EFFICIENCY))
    allreduce = 0.0
    if cost.tp > 1:
        ring = 2 * (cost.tp - 1) / cost.tp * tokens * cost.hidden_size * 2
        allreduce = 2 * cost.layers * (ALLREDUCE_SECONDS + ring / (cost.link_bytes_per_second * LINK_EFFICIENCY))
    return roofline + STEP_OVERHEAD_SECONDS + LAYER_OVERHEAD_SECONDS * cost.layers + allreduce


def uncertainty(gpu: Gpu) -> float:
    """Relative error to assume on a prediction for `gpu`: the fit's on the GPU it was measured on, wider elsewhere."""
    return MEASURED_GPU_UNCERTAINTY if gpu.name in MEASURED_GPUS else UNMEASURED_GPU_UNCERTAINTY


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile by linear interpolation (numpy's default), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# --- a closed-loop burst, step by step (what `verify` measures) -------------------------


@dataclass(frozen=True)
class Batching:
    """The server's batching limits: vLLM's max_num_seqs, max_num_batched_tokens and its KV cache in tokens."""

    max_num_seqs: int
    max_num_batched_tokens: int
    kv_tokens: int


@dataclass(frozen=True)
class BurstPrediction:
    seconds: float
    output_tokens_per_second: float
    ttft_p50_seconds: float
    ttft_p95_seconds: float


@dataclass
class _Request:
    arrival: float
    prefilled: int = 0
    generated: int = 0
    last_token: float = 0.0


@dataclass(frozen=True)
class Trace:
    """What a step-by-step run gave each request: TTFTs, every gap between its tokens, and the end."""

    ttfts: list[float]
    itls: list[float]
    end: float


def _step_through(
    cost: StepCost,
    batching: Batching,
    arrivals: list[_Request],
    prompt_tokens: int,
    output_tokens: int,
    on_finish: Callable[[float], _Request | None],
) -> Trace:
    """Requests of fixed lengths through vLLM's scheduler step by step: running sequences decode
    first, then prompts are prefilled first come first served in chunks within the token budget,
    admitted while fewer than max_num_seqs run and their prompt and output fit the KV cache.
    `on_finish(now)` may send a new request when one ends (a closed loop)."""
    pending = collections.deque(sorted(arrivals, key=lambda r: r.arrival))
    waiting, running, ttfts, itls, now = [], [], [], [], 0.0
    per_request_kv = prompt_tokens + output_tokens
    while pending or waiting or running:
        while pending and pending[0].arrival <= now:
            waiting.append(pending.popleft())
        if not waiting and not running:
            now = pending[0].arrival
            continue
        budget = batching.max_num_batched_tokens
        decoding = [r for r in running if r.prefilled == prompt_tokens]
        budget -= len(decoding)
        while waiting and len(running) < batching.max_num_seqs and (len(running) + 1) * per_request_kv <= batching.kv_tokens:
            running.append(waiting.pop(0))
        chunks = []
        for request in running:
            if request.prefilled < prompt_tokens and budget > 0:
                chunk = min(prompt_tokens - request.prefilled, budget)
                chunks.append((request, chunk))
                budget -= chunk
        prefill = sum(chunk for _, chunk in chunks)
        context = sum(r.prefilled for r, _ in chunks) / len(chunks) if chunks else 0.0
        decode_context = prompt_tokens + sum(r.generated for r in decoding) / len(decoding) if decoding else 0.0
        now += step_seconds(cost, decodes=len(decoding), decode_context=decode_context, prefill=prefill, prefill_context=context)
        for request in decoding:
            request.generated += 1
            itls.append(now - request.last_token)
            request.last_token = now
        for request, chunk in chunks:
            request.prefilled += chunk
            if request.prefilled == prompt_tokens:
                request.generated, request.last_token = 1, now
                ttfts.append(now - request.arrival + REQUEST_OVERHEAD_SECONDS)
        finished = [r for r in running if r.generated >= output_tokens]
        running = [r for r in running if r.generated < output_tokens]
        for _ in finished:
            sent = on_finish(now)
            if sent is not None:
                pending.append(sent)
    return Trace(ttfts=ttfts, itls=itls, end=now + REQUEST_OVERHEAD_SECONDS)


def simulate_burst(
    cost: StepCost, batching: Batching, *, requests: int, concurrency: int, prompt_tokens: int, output_tokens: int
) -> BurstPrediction:
    """`requests` requests of fixed lengths, `concurrency` in flight (each sent when one ends), all
    starting at once, stepped through the scheduler (`_step_through`)."""
    sent = min(requests, concurrency)

    def send(now: float) -> _Request | None:
        nonlocal sent
        if sent >= requests:
            return None
        sent += 1
        return _Request(now)

    trace = _step_through(cost, batching, [_Request(0.0) for _ in range(sent)], prompt_tokens, output_tokens, send)
    return BurstPrediction(
        seconds=trace.end,
        output_tokens_per_second=requests * output_tokens / trace.end,
        ttft_p50_seconds=percentile(trace.ttfts, 50),
        ttft_p95_seconds=percentile(trace.ttfts, 95),
    )


def simulate_arrivals(cost: StepCost, batching: Batching, arrivals: Sequence[float], prompt_tokens: int, output_tokens: int) -> Trace:
    """Requests of fixed lengths arriving at the given times (an open loop), stepped through the
    scheduler: the exact answer of the step model that `predict` approximates in closed form."""
    return _step_through(cost, batching, [_Request(t) for t in arrivals], prompt_tokens, output_tokens, lambda now: None)


# --- a steady load, by queueing approximation (what the planner sizes for) ---------------


@dataclass(frozen=True)
class Lengths:
    """A token-length distribution by its median and 95th percentile."""

    p50: int
    p95: int

    def at(self, q: int) -> int:
        """The length at percentile `q` (the median below the 95th, the 95th above)."""
        return self.p50 if q <= 50 else self.p95


@dataclass(frozen=True)
class Prediction:
    """One server at a steady load; latencies in seconds, `q` the SLO's percentile."""

    requests_per_second: float
    running: float  # sequences decoding at once, on average (Little's law)
    step_seconds: float  # mean engine step = mean inter-token latency
    itl_q_seconds: float
    ttft_p50_seconds: float
    ttft_q_seconds: float
    prefill_utilization: float
    output_tokens_per_second: float


def concurrency_cap(batching: Batching, prompt: Lengths, output: Lengths) -> float:
    """Sequences a server can run at once: max_num_seqs, and what its KV cache holds of median requests."""
    return min(batching.max_num_seqs, batching.kv_tokens / (prompt.p50 + output.p50))


def prefill_seconds(cost: StepCost, batching: Batching, tokens: int, decodes: float, decode_context: float) -> float:
    """A prompt of `tokens` prefilled alone in equal chunks within the token budget, beside `decodes` decoding sequences."""
    chunks = math.ceil(tokens / batching.max_num_batched_tokens)
    chunk = tokens / chunks
    return sum(
        step_seconds(cost, decodes=decodes, decode_context=decode_context, prefill=chunk, prefill_context=i * chunk)
        for i in range(chunks)
    )


def predict(cost: StepCost, batching: Batching, rate: float, prompt: Lengths, output: Lengths, q: int) -> Prediction | None:
    """A server at `rate` requests/s (Poisson arrivals) with these lengths; None when it cannot keep up.

    Decoding: the decode batch follows Little's law, B = rate x output x s. A step that carries a
    prefill chunk takes longer than a pure decode step by the chunk's extra time (its FLOPs do not
    hide under the decode's reads: `step_seconds` of both, subtracted), so with the prompts'
    tokens arriving at rate x prompt the mean step solves s = pure(B) / (1 - rate x prompt x extra
    per token). More sequences than max_num_seqs or the KV cache holds (the concurrency cap), or
    prefill needing all the time, is saturation. The q-th percentile ITL is a step that carries a
    p95 prompt's chunk (and the prompts queued behind it) once more than 1 - q of steps carry one. TTFT: prefill is one M/G/1 server
    (prompts are prefilled first come first served through one token budget) whose service time
    is the prompt's tokens at the per-token time of a step filling the budget beside the decode
    batch; Pollaczek-Khinchine's mean wait for deterministic service and an exponential tail, plus
    the prompt's own prefill and a step in flight."""
    decode_context = prompt.p50 + output.p50 / 2
    cap = concurrency_cap(batching, prompt, output)
    budget = batching.max_num_batched_tokens
    chunk = min(prompt.p50, budget)
    chunk_context = max(0.0, (prompt.p50 - chunk) / 2)
    s = STEP_OVERHEAD_SECONDS
    for _ in range(200):
        running = rate * output.p50 * s
        if running > cap or running >= budget:
            return None
        pure = step_seconds(cost, decodes=running, decode_context=decode_context)
        mixed = step_seconds(cost, decodes=running, decode_context=decode_context, prefill=chunk, prefill_context=chunk_context)
        prefill_share = rate * prompt.p50 * (mixed - pure) / chunk
        if prefill_share >= 1:
            return None
        following = pure / (1 - prefill_share)
        if following - s <= 1e-9 * s:
            break
        s = following
    else:
        return None
    running = rate * output.p50 * s
    room = budget - running
    per_token = step_seconds(cost, decodes=running, decode_context=decode_context, prefill=room, prefill_context=prompt.p50 / 2) / room
    service = prompt.p50 * per_token
    utilization = rate * service
    if utilization >= 1:
        return None

    def wait(pct: int) -> float:
        tail = 1 - pct / 100
        return service / (2 * (1 - utilization)) * math.log(utilization / tail) if utilization > tail else 0.0

    carrying = min(1.0, rate * math.ceil(prompt.p50 / budget) * s)
    pure = step_seconds(cost, decodes=running, decode_context=decode_context)
    # The slow step carries a p95 prompt and, when prompts queue, the mean queue behind it (Little's
    # law on Pollaczek-Khinchine's mean wait), up to the budget.
    queued = rate * service * utilization / (2 * (1 - utilization)) * prompt.p50
    mixed = step_seconds(cost, decodes=running, decode_context=decode_context, prefill=min(prompt.p95 + queued, budget))
    itl_q = max(s, mixed if carrying > 1 - q / 100 else pure)

    def ttft(pct: int) -> float:
        own = prefill_seconds(cost, batching, prompt.at(pct), running, decode_context)
        return wait(pct) + own + s + REQUEST_OVERHEAD_SECONDS

    return Prediction(
        requests_per_second=rate,
        running=running,
        step_seconds=s,
        itl_q_seconds=itl_q,
        ttft_p50_seconds=ttft(50),
        ttft_q_seconds=ttft(q),
        prefill_utilization=utilization,
        output_tokens_per_second=rate * output.p50,
    )


@functools.lru_cache(maxsize=4096)
def saturation_rate(cost: StepCost, batching: Batching, prompt: Lengths, output: Lengths) -> float:
    """The highest arrival rate a server keeps up with (bisection on `predict`, to 0.01 %), requests/s.
    Cached: the planner asks it for every share of the load a candidate is tried at."""
    low, high = 0.0, 1.0
    while predict(cost, batching, high, prompt, output, 50) is not None:
        low, high = high, high * 2
        if high > 1e7:
            return high
    while high - low > RATE_PRECISION * high:
        middle = (low + high) / 2
        low, high = (middle, high) if predict(cost, batching, middle, prompt, output, 50) is not None else (low, middle)
    return low


def predict_closed(
    cost: StepCost, batching: Batching, concurrency: float, prompt: Lengths, output: Lengths, q: int
) -> Prediction | None:
    """A server holding `concurrency` requests in flight, each sent when one ends: the arrival rate
    that Little's law gives, rate x (mean TTFT + output x mean ITL) = concurrency, found by bisection;
    None when even the saturation rate holds fewer in flight (requests would queue for a seat)."""
    in_flight = lambda p: p.requests_per_second * (p.ttft_p50_seconds + output.p50 * p.step_seconds)  # noqa: E731
    high = saturation_rate(cost, batching, prompt, output)
    at_high = predict(cost, batching, high, prompt, output, q)
    if at_high is None or in_flight(at_high) < concurrency:
        return None
    low = 0.0
    while high - low > RATE_PRECISION * high:
        middle = (low + high) / 2
        point = predict(cost, batching, middle, prompt, output, q)
        low, high = (middle, high) if point is not None and in_flight(point) < concurrency else (low, middle)
    return predict(cost, batching, high, prompt, output, q)
