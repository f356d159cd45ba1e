"""The text-model planner: weight, KV, LoRA and activation bytes per GPU from the model's parts,
the vLLM settings, and `plan_model`, the recipe that composes them with the catalog.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from llmfleet.model_store.contract.manifest import FleetManifest, ModelSpec
from llmfleet.model_store.contract.plan import Frozen, GIB, MemoryPlan, PerformancePlan, ServingPlan, VllmSettings
from llmfleet.model_store.facts.families import ArchitectureFacts, mla
from llmfleet.model_store.facts.families.quantization import ONLINE_FORMATS, WeightFormat
from llmfleet.model_store.facts.families.registry import INFERRED_REASON
from llmfleet.model_store.planning import kv_cache
from llmfleet.model_store.planning.catalog import GpuInstance, INSTANCES
from llmfleet.model_store.planning.fit import (
    _valid_tp_sizes,
    Candidate,
    cheapest_fit,
    Choice,
    hardware_refusal,
    hourly_price,
    PlanError,
)
from llmfleet.model_store.planning.lifecycle import (
    _autoscaling,
    boot_seconds,
    COMPILE_SECONDS,
    deployment_fields,
    DRAIN_SECONDS,
    ENGINE_START_SECONDS,
    ENGINE_WARMUP_SECONDS_PER_RANK,
    kernel_warmup_seconds,
    PROFILE_AND_GRAPHS_SECONDS,
    root_volume_gib,
    ScalingTargets,
    SHUTDOWN_MARGIN_SECONDS,
    startup_grace,
)


DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# The plan's share of GPU memory: vLLM's own default is 0.92 (vllm/config/cache.py, 0.26 and
# 0.32); 0.90 leaves headroom for allocator fragmentation and other processes.
GPU_MEMORY_UTILIZATION = 0.90
VLLM_DEFAULT_GPU_MEMORY_UTILIZATION = 0.92
# CUDA context, cuBLAS workspaces and CUDA-graph pools vLLM does not hand to the KV cache
# (measured at 1.0-1.6 GiB on A10G/L4/H100 in vLLM startup logs, 2025); NCCL adds more with TP.
RUNTIME_RESERVE_BYTES = int(1.5 * GIB)
NCCL_RESERVE_BYTES = int(0.5 * GIB)
# vLLM's ceiling on max_num_seqs for online serving (EngineArgs default, v0.32).
MAX_NUM_SEQS_CAP = 256
# Requests average far below max_model_len; size max_num_seqs for this many tokens each.
TYPICAL_REQUEST_TOKENS = 2048
# Manifest values the pinned vLLM cannot serve (vllm.model_executor.layers.quantization.
# QUANTIZATION_METHODS, v0.32, 2026-11; a unit test checks the rest are there).
UNSERVABLE_QUANTIZATION = {
    "bitsandbytes": "is not among vLLM 0.32's quantization methods (its kernels were removed); "
    "use an awq, gptq or fp8 checkpoint, or quantization: fp8 for online quantization",
}


def weight_format(spec: ModelSpec, arch: ArchitectureFacts) -> WeightFormat | None:
    """The weight format vLLM will run: the checkpoint's, or the manifest's online method."""
    declared = spec.quantization.value if spec.quantization is not None else None
    detected = arch.checkpoint_quantization
    if detected and declared and declared not in ("none", detected):
        raise PlanError(
            f"model {spec.name!r}, field 'quantization': manifest says {declared!r} but the checkpoint "
            f"is pre-quantized with {detected!r} (quantization_config); remove the field or set {detected!r}"
        )
    if detected and declared == "none":
        raise PlanError(
            f"model {spec.name!r}, field 'quantization': manifest says 'none' but the checkpoint is "
            f"pre-quantized with {detected!r}; it cannot be served unquantized"
        )
    method = detected or (None if declared in (None, "none") else declared)
    if method in UNSERVABLE_QUANTIZATION:
        raise PlanError(
            f"model {spec.name!r}, field 'quantization': {method!r} "
            f"{'(from the checkpoint) ' if detected else ''}{UNSERVABLE_QUANTIZATION[method]}"
        )
    if detected:
        return arch.weight_format
    if method and method not in ONLINE_FORMATS:
        raise PlanError(
            f"model {spec.name!r}, field 'quantization': {method!r} needs a checkpoint quantized with it "
            f"(its config.json has no quantization_config); online quantization: {sorted(ONLINE_FORMATS)}"
        )
    return ONLINE_FORMATS[method] if method else None


def serving_dtype(spec: ModelSpec, arch: ArchitectureFacts) -> str:
    if spec.dtype != "auto":
        return spec.dtype
    return arch.checkpoint_dtype if arch.checkpoint_dtype in ("bfloat16", "float16") else "bfloat16"


def weight_bytes(arch: ArchitectureFacts, dtype: str, fmt: WeightFormat | None, *, text_only: bool = False) -> int:
    """Bytes of weights in GPU memory.

    The checkpoint's own size when it is served as stored (less what vLLM does not load:
    DeepSeek's MTP layer; the vision encoder when served text only; plus what it holds twice:
    Gemma-4's V projections copied from K); otherwise each part at
    its format: quantized parts at the format's bytes per weight, the rest (embeddings, LM
    head, norms, routers, vision) in 16 bit.
    """
    params = arch.parameters
    skipped_vision = params.vision if text_only else 0
    served_as_stored = (fmt is None and dtype == arch.checkpoint_dtype) or (fmt is not None and not fmt.online)
    if arch.checkpoint_bytes and served_as_stored:
        stored_per_param = arch.checkpoint_bytes / params.checkpoint_total()
        return arch.checkpoint_bytes - int((params.not_loaded + skipped_vision - params.not_stored) * stored_per_param)
    parts = fmt.part_bytes() if fmt else {}
    covered = sum(params.part(name) for name in parts)
    quantized = sum(params.part(name) * size for name, size in parts.items())
    return int(quantized + (params.total() - covered - skipped_vision) * DTYPE_BYTES[dtype])


def kv_element_bytes(kv_cache_dtype: str, dtype: str) -> int:
    return 1 if kv_cache_dtype.startswith("fp8") else DTYPE_BYTES[dtype]


def kv_bytes_per_token(arch: ArchitectureFacts, kv_cache_dtype: str, dtype: str, tp: int = 1) -> int:
    """Every layer's cache for one token of context, on one GPU at tensor-parallel size `tp`.

    Full attention: 2 x layers x KV heads x head_dim x bytes (KV heads split across ranks,
    replicated past them); MLA: layers x (kv_lora_rank + qk_rope_head_dim) x bytes.
    """
    return kv_cache.kv_bytes_per_token(arch.kv_layers, kv_element_bytes(kv_cache_dtype, dtype), tp)


def lora_bytes(arch: ArchitectureFacts, max_rank: int, max_loras: int, tp: int) -> int:
    """GPU buffers vLLM preallocates for `max_loras` adapters of `max_rank` on every module."""
    per_layer = sum((i + o) * max_rank for i, o in arch.linear_shapes().values())
    return math.ceil(max_loras * per_layer * arch.num_layers * 2 / tp)


def activation_bytes(
    arch: ArchitectureFacts,
    batched_tokens: int,
    max_num_seqs: int,
    tp: int,
    *,
    max_model_len: int,
    block_size: int,
    text_only: bool = False,
) -> int:
    """Peak activations of vLLM's profile run: one prefill chunk's hidden states and the largest
    per-layer temporaries (attention, MLP or the fused-MoE workspace), fp32 logits for every
    running sequence, MLA's up-projected prefill workspace, and a multimodal model's encoder
    outputs for one chunk (vLLM's encoder cache, sized by max_num_batched_tokens).
    """
    per_token = (4 * arch.hidden_size + arch.transient_elements_per_token(tp)) * 2
    encoder_cache = batched_tokens * arch.hidden_size * 2 if arch.parameters.vision and not text_only else 0
    mla_workspace = (
        mla.prefill_workspace_bytes(arch.mla_shape, max_model_len, max_num_seqs, block_size, arch.num_attention_heads // tp)
        if arch.mla_shape
        else 0
    )
    return batched_tokens * per_token + max_num_seqs * arch.vocab_size * 4 // tp + encoder_cache + mla_workspace


def _memory_at(
    spec: ModelSpec,
    arch: ArchitectureFacts,
    draft: ArchitectureFacts | None,
    dtype: str,
    fmt: WeightFormat | None,
    gpu_bytes: int,
    tp: int,
) -> MemoryPlan:
    weights = weight_bytes(arch, dtype, fmt, text_only=spec.language_model_only)
    if draft is not None:
        weights += weight_bytes(draft, dtype, None)
    lora = lora_bytes(arch, spec.lora.max_rank, spec.lora.max_loras, tp) if spec.lora else 0
    batched = _batched_tokens(gpu_bytes, spec.max_model_len)
    element = kv_element_bytes(spec.kv_cache_dtype, dtype)
    activations = activation_bytes(
        arch, batched, MAX_NUM_SEQS_CAP, tp,
        max_model_len=spec.max_model_len, block_size=kv_cache.block_size_for(arch.kv_layers, element, tp, DTYPE_BYTES[dtype]),
        text_only=spec.language_model_only,
    )  # fmt: skip
    reserve = RUNTIME_RESERVE_BYTES + (NCCL_RESERVE_BYTES if tp > 1 else 0)
    usable = int(gpu_bytes * GPU_MEMORY_UTILIZATION)
    kv_budget = usable - math.ceil(weights / tp) - lora - activations - reserve
    # vLLM turns its hybrid KV manager off for chunked local attention with an EAGLE drafter.
    eagle = spec.speculative is not None and spec.speculative.method in ("eagle", "eagle3")
    try:
        capacity = kv_cache.kv_capacity(
            arch.kv_layers,
            kv_budget,
            hybrid=not (eagle and any(layer.kind == "chunked" for layer in arch.kv_layers)),
            element_bytes=element,
            tp=tp,
            max_model_len=spec.max_model_len,
            max_num_batched_tokens=batched,
            dtype_bytes=DTYPE_BYTES[dtype],
        )
    except kv_cache.PagesNotUnifiable as exc:
        raise PlanError(f"model {spec.name!r} at tensor-parallel size {tp}: {exc}") from None
    return MemoryPlan(
        parameters=arch.parameter_count(),
        weights_bytes=weights,
        weights_bytes_per_gpu=math.ceil(weights / tp),
        kv_bytes_per_token=kv_bytes_per_token(arch, spec.kv_cache_dtype, dtype, 1),
        kv_bytes_per_token_per_gpu=kv_bytes_per_token(arch, spec.kv_cache_dtype, dtype, tp),
        lora_bytes_per_gpu=lora,
        activation_bytes_per_gpu=activations,
        reserve_bytes_per_gpu=reserve,
        usable_bytes_per_gpu=usable,
        kv_cache_bytes_per_gpu=kv_budget,
        kv_blocks=capacity.num_blocks,
        kv_block_bytes=capacity.page_bytes * capacity.group_size,
        kv_blocks_per_request=capacity.blocks_per_request,
        token_capacity=capacity.tokens,
        max_concurrency=math.floor(capacity.max_concurrency),
    )


def _batched_tokens(gpu_bytes: int, max_model_len: int) -> int:
    """Chunked-prefill budget: 8192 on 40 GB+ GPUs (vLLM's default there), 4096 below."""
    return 8192 if gpu_bytes >= 40 * GIB else 4096


def _evaluate(spec, arch, draft, dtype, fmt, candidate: GpuInstance) -> list[Candidate]:
    refusal = hardware_refusal(spec, dtype, fmt, candidate)
    if refusal:
        return [Candidate(instance_type=candidate.name, tp=0, memory=None, why_not=refusal)]
    results = []
    for tp in _valid_tp_sizes(arch, candidate.gpu_count):
        memory = _memory_at(spec, arch, draft, dtype, fmt, candidate.gpu_memory_bytes, tp)
        why_not = None
        if memory.kv_cache_bytes_per_gpu <= 0:
            why_not = (
                f"TP={tp}: weights {memory.weights_bytes_per_gpu / GIB:.1f} GiB + LoRA "
                f"{memory.lora_bytes_per_gpu / GIB:.1f} + activations {memory.activation_bytes_per_gpu / GIB:.1f} "
                f"+ reserve {memory.reserve_bytes_per_gpu / GIB:.1f} per GPU exceed the usable "
                f"{memory.usable_bytes_per_gpu / GIB:.1f} GiB"
            )
        elif memory.max_concurrency < spec.serving.target_concurrency:
            why_not = (
                f"TP={tp}: KV cache holds {memory.token_capacity:,} tokens = {memory.max_concurrency} "
                f"sequences of {spec.max_model_len:,}; needs {spec.serving.target_concurrency} "
                f"({spec.serving.target_concurrency * spec.max_model_len:,} tokens)"
            )
        results.append(
            Candidate(instance_type=candidate.name, tp=tp, memory=memory, why_not=why_not, headroom=memory.kv_cache_bytes_per_gpu)
        )
        if why_not is None:
            break  # the smallest TP that fits leaves the most GPUs idle-free to reason about
    return results


def _boot_seconds(arch: ArchitectureFacts, weights: int, tp: int, streams: bool) -> tuple[float, str]:
    """Estimated seconds from a started instance to a ready vLLM server, and its breakdown."""
    warmup = (
        ENGINE_START_SECONDS + COMPILE_SECONDS + PROFILE_AND_GRAPHS_SECONDS + kernel_warmup_seconds(arch)
        + ENGINE_WARMUP_SECONDS_PER_RANK * tp
    )  # fmt: skip
    return boot_seconds(weights, streams, warmup, "vLLM start", "measured phases")


class Sizing(Frozen):
    """Instance, TP and batching for one model, why, and (with a load) the predictions behind them."""

    choice: Choice
    max_num_seqs: int
    max_num_batched_tokens: int
    reasons: list[str]
    performance: PerformancePlan | None = None
    scaling: ScalingTargets | None = None


def size_for_concurrency(spec, arch, draft, dtype, fmt, catalog: Sequence[GpuInstance]) -> Sizing:
    """The cheapest instance and TP whose KV cache holds serving.target_concurrency full-length requests."""
    choice = cheapest_fit(spec, catalog, lambda c: _evaluate(spec, arch, draft, dtype, fmt, c))
    max_num_seqs, batched, batching_reason = _batching(spec, choice)
    return Sizing(choice=choice, max_num_seqs=max_num_seqs, max_num_batched_tokens=batched, reasons=[batching_reason])


def plan_model(
    fleet: FleetManifest,
    spec: ModelSpec,
    arch: ArchitectureFacts,
    *,
    draft: ArchitectureFacts | None = None,
    catalog: Sequence[GpuInstance] = INSTANCES,
) -> ServingPlan:
    """Choose instance, TP and vLLM settings for `spec`; raise PlanError with the numbers."""
    fmt, dtype = weight_format(spec, arch), serving_dtype(spec, arch)
    _check_fields_fit(spec, arch)  # fields this architecture cannot honour are refused first
    if spec.load is None:
        sizing = size_for_concurrency(spec, arch, draft, dtype, fmt, catalog)
    else:
        from llmfleet.model_store.planning.load_plan import size_for_load  # lazy: load_plan builds on this module

        sizing = size_for_load(spec, arch, draft, dtype, fmt, catalog)
    choice, max_num_seqs, batched = sizing.choice, sizing.max_num_seqs, sizing.max_num_batched_tokens
    chosen, memory = choice.instance, choice.memory
    boot, breakdown = _boot_seconds(arch, memory.weights_bytes, choice.tp, spec.load_format == "runai_streamer")
    grace, grace_reason = startup_grace(boot, breakdown)
    root_gib = root_volume_gib(memory.weights_bytes, chosen.nvme_gb)
    autoscaling, scaling_reasons = _autoscaling(spec, boot, root_gib, sizing.scaling)
    reasons = _sizing_reasons(spec, arch, draft, dtype, fmt, choice) + [*sizing.reasons, grace_reason, *scaling_reasons]
    return ServingPlan(
        **deployment_fields(fleet, spec, chosen, grace, root_gib, reasons),
        architecture=arch.source,
        aliases=spec.aliases,
        tensor_parallel_size=choice.tp,
        memory=memory,
        vllm=_vllm_settings(spec, dtype, fmt, choice.tp, max_num_seqs, batched),
        autoscaling=autoscaling,
        family=arch.family,
        weight_format=fmt.describe() if fmt else None,
        adapters=spec.lora.adapters if spec.lora else [],
        lora_max_rank=spec.lora.max_rank if spec.lora else None,
        performance=sizing.performance,
    )


def _check_fields_fit(spec: ModelSpec, arch: ArchitectureFacts) -> None:
    if spec.language_model_only and not arch.parameters.vision:
        raise PlanError(
            f"model {spec.name!r}, field 'language_model_only': {arch.model_type} has no vision encoder to leave out; remove the field"
        )
    if spec.lora and arch.is_moe:
        raise PlanError(
            f"model {spec.name!r}, field 'lora': LoRA on a mixture-of-experts model ({arch.moe.num_experts} experts) "
            "is not modelled: vLLM's expert LoRA buffers are not sized by the planner yet"
        )
    if spec.max_model_len > arch.max_position_embeddings:
        raise PlanError(
            f"model {spec.name!r}, field 'max_model_len': {spec.max_model_len} exceeds the model's "
            f"max_position_embeddings {arch.max_position_embeddings}"
        )


def _sizing_reasons(spec, arch, draft, dtype, fmt, choice: Choice) -> list[str]:
    """Why this model got this instance and this much KV cache, in the plan's own numbers."""
    chosen, memory = choice.instance, choice.memory
    reasons = [
        f"{arch.family} ({arch.model_type}, facts from {arch.source or 'config.json'}); weights {memory.weights_bytes / GIB:.2f} GiB "
        f"({memory.parameters / 1e9:.2f} B params, {fmt.describe() if fmt else dtype})"
        f"{' incl. draft model' if draft else ''}",
        _kv_reason(
            arch, kv_element_bytes(spec.kv_cache_dtype, dtype), memory, DTYPE_BYTES[dtype],
            kv_cache.block_size_for(arch.kv_layers, kv_element_bytes(spec.kv_cache_dtype, dtype), choice.tp, DTYPE_BYTES[dtype]),
        ),
        f"{chosen.name} (${hourly_price(chosen, spec.serving.targets):.2f}/h for {'+'.join(spec.serving.targets)}) "
        f"is the cheapest of {choice.fitting} fitting choices; TP={choice.tp} over "
        f"{chosen.gpu_count} x {chosen.gpu.name} {chosen.gpu.memory_mib / 1024:.1f} GiB",
        f"per GPU: {memory.usable_bytes_per_gpu / GIB:.1f} GiB usable (x{GPU_MEMORY_UTILIZATION}) - weights "
        f"{memory.weights_bytes_per_gpu / GIB:.1f} - LoRA {memory.lora_bytes_per_gpu / GIB:.2f} - activations "
        f"{memory.activation_bytes_per_gpu / GIB:.2f} - reserve {memory.reserve_bytes_per_gpu / GIB:.1f} "
        f"= KV {memory.kv_cache_bytes_per_gpu / GIB:.1f} GiB = {memory.token_capacity:,} tokens = "
        f"{memory.max_concurrency} x {spec.max_model_len:,}-token sequences",
    ]
    if arch.inferred:
        reasons.insert(1, f"{arch.model_type} is not a registered model type: its layout was {INFERRED_REASON}")
    reasons += [f"not {c.instance_type}: {c.why_not}" for c in choice.cheaper_refused[:3]]
    if fmt and fmt.online:
        reasons.append(f"{fmt.method} quantization is applied online at load time")
    elif fmt:
        reasons.append(f"{fmt.method} detected from the checkpoint's quantization_config; vLLM picks its kernel")
    return reasons


def _batching(spec: ModelSpec, choice: Choice) -> tuple[int, int, str]:
    """(max_num_seqs, max_num_batched_tokens, reason): as many sequences as typical requests fit in the KV cache."""
    typical = min(spec.max_model_len, TYPICAL_REQUEST_TOKENS)
    max_num_seqs = min(MAX_NUM_SEQS_CAP, max(spec.serving.target_concurrency, choice.memory.token_capacity // typical))
    batched = max(_batched_tokens(choice.instance.gpu_memory_bytes, spec.max_model_len), max_num_seqs)
    reason = (
        f"max_num_seqs {max_num_seqs}: KV room for requests of ~{typical} tokens, capped at {MAX_NUM_SEQS_CAP}; "
        f"max_num_batched_tokens {batched} (chunked prefill)"
    )
    return max_num_seqs, batched, reason


def _vllm_settings(spec: ModelSpec, dtype: str, fmt: WeightFormat | None, tp: int, max_num_seqs: int, batched: int) -> VllmSettings:
    return VllmSettings(
        served_model_name=spec.name,
        dtype=dtype,
        quantization=fmt.method if fmt and fmt.online else None,
        kv_cache_dtype=spec.kv_cache_dtype,
        max_model_len=spec.max_model_len,
        tensor_parallel_size=tp,
        gpu_memory_utilization=GPU_MEMORY_UTILIZATION,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=batched,
        enable_lora=spec.lora is not None,
        max_lora_rank=spec.lora.max_rank if spec.lora else None,
        max_loras=spec.lora.max_loras if spec.lora else None,
        max_cpu_loras=spec.lora.max_cpu_loras if spec.lora else None,
        reasoning_parser=spec.reasoning_parser,
        language_model_only=spec.language_model_only,
        speculative_config=_speculative_config(spec),
        load_format=spec.load_format,
        shutdown_timeout=DRAIN_SECONDS - SHUTDOWN_MARGIN_SECONDS,
        allowed_media_domains=spec.serving.media_domains or None,
    )


def _kv_reason(arch: ArchitectureFacts, element: int, memory: MemoryPlan, dtype_bytes: int, block_size: int) -> str:
    """KV bytes per token as a sum over the layer kinds, and what vLLM's allocator makes of it."""
    parts = []
    for layer in arch.kv_layers:
        if layer.kind == "state":
            continue
        kind = f"{layer.kind}({layer.window})" if layer.window else layer.kind
        shape = f"latent {layer.head_size}" if layer.kind == "mla" else f"2 x {layer.kv_heads} KV heads x {layer.head_size}"
        parts.append(f"{layer.count} {kind} layers x {shape}")
    line = f"KV cache {memory.kv_bytes_per_token / 1024:.0f} KiB/token = ({' + '.join(parts)}) x {element} B"
    sparse = [layer for layer in arch.kv_layers if layer.indexer_bytes]
    if sparse:
        layer = sparse[0]
        latent = layer.bytes_per_token(1, element) - layer.indexer_bytes
        line = (
            f"KV cache {memory.kv_bytes_per_token / 1024:.0f} KiB/token = {layer.count} sparse-attention MLA layers x "
            f"({latent} B latent + {layer.indexer_bytes} B indexer keys), {block_size}-token blocks"
        )
    states = [layer for layer in arch.kv_layers if layer.kind == "state"]
    if states:
        per_sequence = kv_cache.state_bytes_per_sequence(arch.kv_layers, dtype_bytes)
        line += (
            f"; {sum(layer.count for layer in states)} state layers keep {per_sequence / 2**20:.1f} MiB per sequence "
            f"whatever its length, in {block_size}-token pages shared with attention: "
            f"{memory.kv_blocks_per_request} blocks per full-length request"
        )
    if any(layer.window for layer in arch.kv_layers):
        line += f"; windowed layers hold only their window: {memory.kv_blocks_per_request} blocks per full-length request"
    return line


def _speculative_config(spec: ModelSpec) -> dict[str, Any] | None:
    """vLLM's current --speculative-config form (not the removed --speculative-model)."""
    if spec.speculative is None:
        return None
    config: dict[str, Any] = {"num_speculative_tokens": spec.speculative.num_speculative_tokens}
    if spec.speculative.method != "draft_model":
        config["method"] = spec.speculative.method
    if spec.speculative.model:
        config["model"] = spec.speculative.model
    if spec.speculative.prompt_lookup_max:
        config["prompt_lookup_max"] = spec.speculative.prompt_lookup_max
    return config
