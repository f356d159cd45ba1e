"""The planner: a model and a GPU catalog in, a frozen ServingPlan out. Pure, no I/O.

Every figure a stack, the entrypoint or the CLI needs is decided here once, with the
reason written into `ServingPlan.reasons`. vLLM's flags are a *view* of `VllmSettings`
(`vllm_argv`), never a separately kept list.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer

from llmfleet.model_store import kv_cache
from llmfleet.model_store.catalog import INSTANCES, GpuInstance, instance
from llmfleet.model_store.errors import EXIT_REFUSED, LlmfleetError
from llmfleet.model_store.families import ArchitectureFacts, mla
from llmfleet.model_store.families.registry import INFERRED_REASON
from llmfleet.model_store.manifest import AdapterRef, FleetManifest, ModelSpec, ServingSpec
from llmfleet.model_store.families.quantization import ONLINE_FORMATS, WeightFormat

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}

GIB = 2**30
MIB = 2**20

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
# Boot-time estimates for the health-check grace (conservative; ECR pull of the ~10 GB
# vLLM image, S3 -> NVMe sync with the transfer manager, NVMe -> GPU load).
IMAGE_PULL_SECONDS = 120
S3_SYNC_BYTES_PER_SECOND = 500 * MIB
GPU_LOAD_BYTES_PER_SECOND = 2 * GIB
# vLLM's start besides reading weights, per phase, with a cold compile cache: the longest each
# phase took for any model of tests/data/gpu_measurements.json (H200, vLLM 0.26: 74-82 s, 17-66 s,
# 29-89 s), rounded up; tests/unit/test_gpu_measurements.py holds them to every new measurement.
ENGINE_START_SECONDS = 90  # Python and the API server, the engine process, building the model
COMPILE_SECONDS = 70  # torch.compile
PROFILE_AND_GRAPHS_SECONDS = 90  # KV-cache profiling, CUDA-graph capture, warm-up
# Mamba-2 models also JIT vLLM's SSD Triton kernels during the profiling run ("Warming up
# Mamba2 SSD Triton kernels": 92 s for Nemotron-3-Nano on an H200, cold Triton cache).
MAMBA2_KERNEL_WARMUP_SECONDS = 100
ENGINE_WARMUP_SECONDS_PER_RANK = 15
GRACE_SAFETY_FACTOR = 1.5
# SageMaker accepts 60-3600 s for startup health-check and download timeouts.
MIN_GRACE_SECONDS, MAX_GRACE_SECONDS = 300, 3600
# ECS caps a container's stopTimeout at 120 s; vLLM stops accepting work then finishes
# in-flight requests for --shutdown-timeout, which must end before ECS sends SIGKILL.
DRAIN_SECONDS = 120
SHUTDOWN_MARGIN_SECONDS = 10
# ALB request-count fallback assumes a request takes this long on average.
ASSUMED_REQUEST_SECONDS = 20
# Scale to zero (serving.min_capacity 0): a target with no requests for this long stops its servers.
DEFAULT_IDLE_MINUTES = 30
# The ECS instances' root volume: the vLLM image (~10 GB unpacked) and the OS; weights go to
# instance-store NVMe when there is one, else here (twice: a second revision during an update).
ROOT_VOLUME_GIB = 100
# A stopped warm-pool instance costs its EBS volumes only: gp3, us-east-1 on-demand
# (aws.amazon.com/ebs/pricing, 2026-11), as the catalog's prices are us-east-1's.
GP3_USD_PER_GIB_MONTH = 0.08
HOURS_PER_MONTH = 730
# The first request after idle: the wake alarm needs one full one-minute datapoint; then a server
# must come up. Estimates, not measurements: starting a stopped warm-pool instance and registering
# its ECS agent (~1 min), launching a fresh one (~2 min), SageMaker provisioning an instance for an
# inference component (1.75 min, AWS ML blog "scale down to zero", 2024-12).
WAKE_ALARM_SECONDS = 60
WARM_INSTANCE_START_SECONDS = 60
COLD_INSTANCE_LAUNCH_SECONDS = 120
SAGEMAKER_PROVISION_SECONDS = 105

# Manifest values the pinned vLLM cannot serve (vllm.model_executor.layers.quantization.
# QUANTIZATION_METHODS, v0.32, 2026-11; a unit test checks the rest are there).
UNSERVABLE_QUANTIZATION = {
    "bitsandbytes": "is not among vLLM 0.32's quantization methods (its kernels were removed); "
    "use an awq, gptq or fp8 checkpoint, or quantization: fp8 for online quantization",
}

DEFAULT_MODEL_ROOT = "/var/lib/llmfleet/models"


class PlanError(LlmfleetError):
    """A model the catalog cannot serve as asked; the message carries the numbers."""

    exit_code = EXIT_REFUSED


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _flag(name: str) -> dict[str, Any]:
    return {"json_schema_extra": {"flag": name}}


class VllmSettings(Frozen):
    """Every `vllm serve` setting the plan decides; each field names its flag.

    `vllm_argv` renders these; nothing else writes vLLM flags.
    """

    served_model_name: str = Field(**_flag("--served-model-name"))
    dtype: str = Field(**_flag("--dtype"))
    quantization: str | None = Field(default=None, **_flag("--quantization"))
    kv_cache_dtype: str = Field(default="auto", **_flag("--kv-cache-dtype"))
    max_model_len: int = Field(**_flag("--max-model-len"))
    tensor_parallel_size: int = Field(**_flag("--tensor-parallel-size"))
    gpu_memory_utilization: float = Field(**_flag("--gpu-memory-utilization"))
    max_num_seqs: int = Field(**_flag("--max-num-seqs"))
    max_num_batched_tokens: int = Field(**_flag("--max-num-batched-tokens"))
    enable_prefix_caching: bool = Field(default=True, **_flag("--enable-prefix-caching"))
    enable_lora: bool = Field(default=False, **_flag("--enable-lora"))
    max_lora_rank: int | None = Field(default=None, **_flag("--max-lora-rank"))
    max_loras: int | None = Field(default=None, **_flag("--max-loras"))
    max_cpu_loras: int | None = Field(default=None, **_flag("--max-cpu-loras"))
    reasoning_parser: str | None = Field(default=None, **_flag("--reasoning-parser"))
    language_model_only: bool = Field(default=False, **_flag("--language-model-only"))
    speculative_config: dict[str, Any] | None = Field(default=None, **_flag("--speculative-config"))
    load_format: str = Field(default="auto", **_flag("--load-format"))
    shutdown_timeout: int = Field(**_flag("--shutdown-timeout"))
    allowed_media_domains: list[str] | None = Field(default=None, **_flag("--allowed-media-domains"))

    @model_serializer(mode="wrap")
    def _without_unset_media_domains(self, handler) -> dict[str, Any]:
        """Plans without media domains are written as before the field existed, so their JSON
        and the compile-cache keys made from it do not change."""
        data = handler(self)
        if data.get("allowed_media_domains") is None:
            data.pop("allowed_media_domains", None)
        return data


class MemoryPlan(Frozen):
    """Per-GPU memory budget at the chosen tensor-parallel size (bytes)."""

    parameters: int
    weights_bytes: int
    weights_bytes_per_gpu: int
    kv_bytes_per_token: int
    kv_bytes_per_token_per_gpu: int
    lora_bytes_per_gpu: int
    activation_bytes_per_gpu: int
    reserve_bytes_per_gpu: int
    usable_bytes_per_gpu: int
    kv_cache_bytes_per_gpu: int
    kv_blocks: int = Field(description="vLLM's KV cache blocks per GPU (each a page of every layer group).")
    kv_block_bytes: int
    kv_blocks_per_request: int = Field(description="Blocks one max_model_len request may hold (windows count less).")
    token_capacity: int = Field(description="vLLM's 'GPU KV cache size': max_concurrency x max_model_len tokens.")
    max_concurrency: int


class TimingPlan(Frozen):
    startup_grace_seconds: int
    drain_seconds: int
    deregistration_delay_seconds: int
    health_check_path: str = "/health"
    health_check_interval_seconds: int = 15
    health_check_timeout_seconds: int = 5
    healthy_threshold: int = 2
    unhealthy_threshold: int = 3


class AutoscalingPlan(Frozen):
    min_capacity: int
    max_capacity: int
    target_queue_depth: float = Field(description="vllm:num_requests_waiting per server to hold.")
    target_requests_per_minute: int = Field(description="ALB RequestCountPerTarget fallback.")
    scale_out_cooldown_seconds: int = 60
    scale_in_cooldown_seconds: int = 600
    idle_minutes: int | None = Field(
        default=None, description="min_capacity 0: minutes without requests before a target stops its last server; else None."
    )
    wake_seconds: dict[str, int] = Field(
        default_factory=dict, description="min_capacity 0: estimated seconds from the first request after idle to a server answering, per target."
    )
    warm_pool_instances: int = Field(default=0, description="ECS: stopped GPU instances kept booted once with the image pulled.")
    warm_pool_usd_per_month: float = Field(default=0.0, description="What the warm pool costs: its instances' EBS volumes.")


class PerformancePlan(Frozen):
    """What the performance model predicts for the fleet at the manifest's `load` (model_store.performance)."""

    replicas: int = Field(description="Servers the load needs.")
    requests_per_second: float = Field(description="The fleet's arrival rate (given, or by Little's law from its concurrency).")
    concurrency: float = Field(description="Requests in flight over the fleet (given, or by Little's law from its rate).")
    percentile: int
    ttft_p50_ms: float
    ttft_ms: float = Field(description="Time to first token at the SLO's percentile.")
    itl_mean_ms: float
    itl_ms: float = Field(description="Inter-token latency at the SLO's percentile.")
    output_tokens_per_second: float = Field(description="The fleet's, at the load.")
    usd_per_million_output_tokens: float
    max_requests_per_second_per_server: float = Field(description="The most one server takes within the SLO.")
    uncertainty: float = Field(description="Relative error to assume on these predictions (wider off the measured GPUs).")
    runner_up: str | None = Field(description="The cheapest choice on another instance type, and why it lost.")


class DeploymentPlan(Frozen):
    """What the stacks, the store sync and `status` read from any model's plan, whatever serves
    it (vLLM for a text model, the image server for an image pipeline); JSON-serialisable."""

    fleet: str
    stage: str
    region: str
    model_name: str
    source: str
    store_uri: str | None = Field(description="s3://bucket[/prefix] holding models/, adapters/, registry/.")
    revision: str
    architecture: str
    targets: list[Literal["ecs", "sagemaker"]]
    instance_type: str
    sagemaker_instance_type: str | None
    gpu_name: str
    gpus_per_instance: int
    gpu_memory_bytes: int
    instance_memory_gib: int
    instance_nvme_gb: int
    root_volume_gib: int = Field(description="ECS instances' root EBS volume (image, OS; the weights when there is no NVMe).")
    tensor_parallel_size: int = Field(description="GPUs one server uses (vLLM's tensor-parallel size; 1 for an image pipeline).")
    timing: TimingPlan
    autoscaling: AutoscalingPlan
    cost_per_hour_usd: float = Field(description="One server on each target, on-demand.")
    price_source: str
    reasons: list[str]

    @property
    def streams_weights(self) -> bool:
        return False

    def model_location(self, model_root: str = DEFAULT_MODEL_ROOT) -> str:
        """Where the server loads weights from: the S3 source when streaming, else the synced copy."""
        if self.streams_weights:
            return f"{self.store_uri}/models/{self.model_name}/{self.revision}"
        return f"{model_root}/{self.model_name}/{self.revision}"

    def to_json(self) -> str:
        return self.model_dump_json()


class ServingPlan(DeploymentPlan):
    """Everything decided about serving one text model with vLLM (LLMFLEET_PLAN)."""

    kind: Literal["text"] = "text"
    aliases: list[str] = Field(default_factory=list)
    memory: MemoryPlan
    vllm: VllmSettings
    family: str = Field(default="", description="The model's layout as the planner read it (e.g. 'MLA + MoE').")
    weight_format: str | None = Field(default=None, description="Quantized weight format, when there is one.")
    adapters: list[AdapterRef] = Field(default_factory=list)
    lora_max_rank: int | None = None
    performance: PerformancePlan | None = Field(default=None, description="Predictions at the manifest's load, when it has one.")

    @model_serializer(mode="wrap")
    def _without_unset_performance(self, handler) -> dict[str, Any]:
        """Plans of models without a load are written as before the field existed (the compile-cache
        keys and the committed plans made from them do not change)."""
        data = handler(self)
        if data.get("performance") is None:
            data.pop("performance", None)
        return data

    @property
    def streams_weights(self) -> bool:
        return self.vllm.load_format == "runai_streamer"

    @classmethod
    def from_json(cls, text: str) -> ServingPlan:
        return cls.model_validate_json(text)


def json_flag(value: dict[str, Any]) -> str:
    """A JSON-valued vLLM flag (--speculative-config ...), compact and stable."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def vllm_argv(
    settings: VllmSettings,
    *,
    model: str,
    port: int = 8000,
    host: str = "0.0.0.0",  # noqa: S104 - the container's port is the service's port
    lora_modules: dict[str, str] | None = None,
) -> list[str]:
    """The argv after `vllm serve` (or `python -m vllm.entrypoints.openai.api_server`).

    The API key is not here: vLLM reads VLLM_API_KEY from the environment, which keeps it
    out of `ps` and logs.
    """
    argv = ["--model", model, "--host", host, "--port", str(port)]
    for name, field in VllmSettings.model_fields.items():
        value = getattr(settings, name)
        flag = field.json_schema_extra["flag"]
        if value is None:
            continue
        if isinstance(value, bool):
            if value:
                argv.append(flag)
            elif field.default is True:
                argv.append("--no-" + flag.removeprefix("--"))
        elif isinstance(value, dict):
            argv += [flag, json_flag(value)]
        elif isinstance(value, list):
            argv += [flag, *value]
        else:
            argv += [flag, str(value)]
    if lora_modules:
        argv.append("--lora-modules")
        argv += [f"{name}={path}" for name, path in sorted(lora_modules.items())]
    return argv


# --- memory math -------------------------------------------------------------------------


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


def _valid_tp_sizes(arch: ArchitectureFacts, gpus: int) -> list[int]:
    """vLLM needs attention heads divisible by TP, KV heads divisible by (or dividing) TP
    (MLA has no KV heads: its latent is whole on every rank) and state heads divisible by TP."""
    latent = arch.mla_shape is not None
    # State layers split their heads over ranks too (vLLM's divide() in MambaStateShapeCalculator).
    state_heads = [layer.state.heads for layer in arch.kv_layers if layer.state]
    return [
        tp
        for tp in range(1, gpus + 1)
        if arch.num_attention_heads % tp == 0
        and (latent or arch.num_kv_heads % tp == 0 or tp % arch.num_kv_heads == 0)
        and all(heads % tp == 0 for heads in state_heads)
    ]


class Candidate(Frozen):
    instance_type: str
    tp: int
    memory: Any = Field(description="The kind's memory plan (MemoryPlan for a text model); None when refused before sizing.")
    why_not: str | None
    headroom: int = Field(default=0, description="Bytes left for the kind's elastic use (KV cache, images in flight); ranks near misses.")


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


def hardware_refusal(spec: ModelSpec, dtype: str, fmt: WeightFormat | None, candidate: GpuInstance) -> str | None:
    gpu = candidate.gpu
    if "sagemaker" in spec.serving.targets and candidate.sagemaker_name is None:
        return "no SageMaker price in the catalog (not offered, or its price is not known)"
    if dtype == "bfloat16" and not gpu.bf16:
        return f"{gpu.name} (compute {gpu.compute_capability}) has no bfloat16"
    if fmt and gpu.compute_capability < fmt.min_capability:
        return (
            f"{fmt.method} ({fmt.scheme}) kernels need compute capability >= {fmt.min_capability}, "
            f"{gpu.name} has {gpu.compute_capability}"
        )
    return None


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


def hourly_price(candidate: GpuInstance, targets: Sequence[str]) -> float:
    """Hourly price of one server on each target; infinite where a target does not offer it."""
    prices = [candidate.price_usd_hour if t == "ecs" else candidate.sagemaker_price_usd_hour for t in targets]
    return math.inf if None in prices else sum(prices)


def kernel_warmup_seconds(arch: ArchitectureFacts) -> int:
    """Seconds of kernel JIT beyond the common phases that this architecture's start adds."""
    has_mamba2 = any(layer.state is not None and layer.state.kind == "mamba2" for layer in arch.kv_layers)
    return MAMBA2_KERNEL_WARMUP_SECONDS if has_mamba2 else 0


def _boot_seconds(arch: ArchitectureFacts, weights: int, tp: int, streams: bool) -> tuple[float, str]:
    """Estimated seconds from a started instance to a ready vLLM server, and its breakdown."""
    warmup = (
        ENGINE_START_SECONDS + COMPILE_SECONDS + PROFILE_AND_GRAPHS_SECONDS + kernel_warmup_seconds(arch)
        + ENGINE_WARMUP_SECONDS_PER_RANK * tp
    )  # fmt: skip
    return boot_seconds(weights, streams, warmup, "vLLM start", "measured phases")


def boot_seconds(weights: int, streams: bool, warmup: int, server: str, basis: str) -> tuple[float, str]:
    """Seconds from a started instance to a ready server: image pull, weights from S3 and onto the
    GPU, then `warmup` seconds of `server` start (`basis` says where that figure comes from)."""
    sync = 0 if streams else weights / S3_SYNC_BYTES_PER_SECOND
    load = weights / (S3_SYNC_BYTES_PER_SECOND if streams else GPU_LOAD_BYTES_PER_SECOND)
    breakdown = (
        f"image pull {IMAGE_PULL_SECONDS}s + "
        + ("" if streams else f"S3 sync {sync:.0f}s + ")
        + f"{'stream' if streams else 'GPU load'} {load:.0f}s + {server} {warmup}s ({basis})"
    )
    return IMAGE_PULL_SECONDS + sync + load + warmup, breakdown


def startup_grace(boot: float, breakdown: str) -> tuple[int, str]:
    """Health-check grace for a boot of `boot` seconds: with a safety factor, within what ECS and SageMaker accept."""
    grace = min(MAX_GRACE_SECONDS, max(MIN_GRACE_SECONDS, math.ceil(boot * GRACE_SAFETY_FACTOR / 30) * 30))
    reason = (
        f"health-check grace {grace}s: {breakdown} = {boot:.0f}s, "
        f"x{GRACE_SAFETY_FACTOR}, within [{MIN_GRACE_SECONDS}, {MAX_GRACE_SECONDS}]"
    )
    return grace, reason


def root_volume_gib(weights_bytes: int, nvme_gb: int) -> int:
    """The ECS instance's root volume: the image and OS, plus two revisions of weights without NVMe."""
    return ROOT_VOLUME_GIB if nvme_gb else ROOT_VOLUME_GIB + 2 * math.ceil(weights_bytes / GIB)


def warm_pool_size(serving: ServingSpec) -> int:
    """Stopped ECS instances kept ready: the manifest's number, else one for a model that scales to zero
    (its wake-up then skips the launch and the image pull) and none otherwise."""
    if "ecs" not in serving.targets:
        return 0
    if serving.warm_pool is not None:
        return serving.warm_pool
    return 1 if serving.min_capacity == 0 else 0


def warm_pool_usd_per_month(instances: int, root_gib: int) -> float:
    """A stopped instance bills only its EBS volumes."""
    return round(instances * root_gib * GP3_USD_PER_GIB_MONTH, 2)


def wake_seconds(targets: Sequence[str], boot: float, warm_pool: int) -> dict[str, int]:
    """Seconds from the first request after idle to a ready server, per target (requests meanwhile fail).

    ECS with a warm pool starts a stopped instance whose image is already pulled; without one it
    launches an instance and pulls. SageMaker provisions an instance, then boots the container.
    """
    seconds = {}
    for target in targets:
        if target == "ecs" and warm_pool:
            seconds[target] = WAKE_ALARM_SECONDS + WARM_INSTANCE_START_SECONDS + boot - IMAGE_PULL_SECONDS
        elif target == "ecs":
            seconds[target] = WAKE_ALARM_SECONDS + COLD_INSTANCE_LAUNCH_SECONDS + boot
        else:
            seconds[target] = WAKE_ALARM_SECONDS + SAGEMAKER_PROVISION_SECONDS + boot
    return {target: math.ceil(value) for target, value in seconds.items()}


def scale_to_zero(spec: ModelSpec, boot: float, root_gib: int) -> tuple[dict[str, Any], list[str]]:
    """The AutoscalingPlan fields for idle scale-in and the warm pool, and their reasons."""
    serving, fields, reasons = spec.serving, {}, []
    instances = warm_pool_size(serving)
    if instances:
        cost = warm_pool_usd_per_month(instances, root_gib)
        fields.update(warm_pool_instances=instances, warm_pool_usd_per_month=cost)
        reasons.append(
            f"ECS warm pool: {instances} stopped instance(s), booted once with the serving image pulled, so a scale-out "
            f"skips the launch and the {IMAGE_PULL_SECONDS}s pull; ${cost:.2f}/month ({root_gib} GiB gp3 each at "
            f"${GP3_USD_PER_GIB_MONTH}/GiB-month; a stopped instance bills no compute)"
        )
    if serving.min_capacity == 0:
        idle = serving.idle_minutes or DEFAULT_IDLE_MINUTES
        wake = wake_seconds(serving.targets, boot, instances)
        slowest = max(wake.values())
        if idle * 60 <= slowest:
            raise PlanError(
                f"model {spec.name!r}, field 'serving.idle_minutes': {idle} min is not longer than the ~{slowest} s "
                f"a server takes to wake ({wake}); a woken server would be stopped before it answers. "
                f"Use more than {slowest // 60} minutes"
            )
        fields.update(idle_minutes=idle, wake_seconds=wake)
        reasons.append(
            f"scale to zero after {idle} min without requests; the first request after that is refused (503 on ECS, "
            "an error on SageMaker) until a server is up: about "
            + ", ".join(f"{seconds // 60} min {seconds % 60} s on {target}" for target, seconds in wake.items())
        )
    return fields, reasons


class ScalingTargets(Frozen):
    """Autoscaling targets a performance model derived for a load, with the reason to print."""

    queue_depth: int
    requests_per_minute: int
    replicas: int
    reason: str


def _autoscaling(
    spec: ModelSpec, boot: float, root_gib: int, targets: ScalingTargets | None = None
) -> tuple[AutoscalingPlan, list[str]]:
    serving = spec.serving
    zero_fields, zero_reasons = scale_to_zero(spec, boot, root_gib)
    queue = max(1, serving.target_concurrency // 4)
    why = f"scale when more than {queue} requests wait per server (a quarter of target concurrency {serving.target_concurrency})"
    requests_per_minute = max(1, serving.target_concurrency * 60 // ASSUMED_REQUEST_SECONDS)
    if serving.slo_ttft_ms is not None:
        # Each waiting request costs about one prefill slot; keep the queue short enough
        # that the wait alone stays inside the TTFT objective (~500 ms per queued request).
        slo_queue = max(1, serving.slo_ttft_ms // 500)
        if slo_queue < queue:
            queue, why = slo_queue, f"scale when more than {slo_queue} requests wait (TTFT SLO {serving.slo_ttft_ms} ms)"
    if targets is not None:
        queue, requests_per_minute, why = targets.queue_depth, targets.requests_per_minute, targets.reason
    plan = AutoscalingPlan(
        min_capacity=serving.min_capacity,
        max_capacity=max(serving.max_capacity, targets.replicas if targets else 0),
        target_queue_depth=float(queue),
        target_requests_per_minute=requests_per_minute,
        **zero_fields,
    )
    return plan, [why, *zero_reasons]


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
        from llmfleet.model_store.load_plan import size_for_load  # lazy: load_plan builds on this module

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


def deployment_fields(
    fleet: FleetManifest, spec: ModelSpec, chosen: GpuInstance, grace: int, root_gib: int, reasons: list[str]
) -> dict[str, Any]:
    """The DeploymentPlan fields every kind fills the same way: names, place, instance, timing, cost."""
    targets = spec.serving.targets
    return {
        "fleet": fleet.name,
        "stage": fleet.stage,
        "region": fleet.region,
        "model_name": spec.name,
        "source": spec.source,
        "store_uri": spec.store_uri,
        "revision": spec.revision,
        "targets": targets,
        "instance_type": chosen.name,
        "sagemaker_instance_type": chosen.sagemaker_name if "sagemaker" in targets else None,
        "gpu_name": chosen.gpu.name,
        "gpus_per_instance": chosen.gpu_count,
        "gpu_memory_bytes": chosen.gpu_memory_bytes,
        "instance_memory_gib": chosen.memory_gib,
        "instance_nvme_gb": chosen.nvme_gb,
        "root_volume_gib": root_gib,
        "timing": TimingPlan(startup_grace_seconds=grace, drain_seconds=DRAIN_SECONDS, deregistration_delay_seconds=DRAIN_SECONDS),
        "cost_per_hour_usd": round(hourly_price(chosen, targets), 4),
        "price_source": "; ".join(dict.fromkeys(chosen.price_source if t == "ecs" else chosen.sagemaker_price_source for t in targets)),
        "reasons": reasons,
    }


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


class Choice(Frozen):
    """The cheapest fitting (instance, TP), and what the reasons say about the others."""

    instance: GpuInstance
    tp: int
    memory: Any = Field(description="The kind's memory plan at the chosen instance and TP.")
    fitting: int = Field(description="How many (instance, TP) choices fit.")
    cheaper_refused: list[Candidate] = Field(description="Cheaper choices that do not fit, cheapest first.")


def cheapest_fit(spec: ModelSpec, catalog: Sequence[GpuInstance], evaluate: Callable[[GpuInstance], list[Candidate]]) -> Choice:
    """The cheapest (instance, TP) that `evaluate` lets fit, among the pinned instance or the
    catalog; PlanError with the three nearest misses when none does. Every model kind uses it."""
    pool = [instance(spec.serving.instance_type)] if spec.serving.instance_type else list(catalog)
    evaluated = [c for candidate in pool for c in evaluate(candidate)]
    fitting = [c for c in evaluated if c.why_not is None]
    if not fitting:
        closest = sorted((c for c in evaluated if c.memory), key=lambda c: -c.headroom)[:3]
        shown = closest or evaluated[:3]
        details = "; ".join(f"{c.instance_type} {c.why_not}" for c in shown)
        raise PlanError(f"model {spec.name!r} fits no {'pinned ' if spec.serving.instance_type else ''}instance: {details}")
    by_name = {c.name: c for c in pool}
    price = lambda c: hourly_price(by_name[c.instance_type], spec.serving.targets)  # noqa: E731
    best = min(fitting, key=lambda c: (price(c), c.tp))
    if best.memory is None:  # fitting candidates always carry their memory plan
        raise PlanError(f"model {spec.name!r}: internal error, a fitting choice without a memory plan")
    cheaper_refused = sorted((c for c in evaluated if c.why_not and price(c) < price(best)), key=price)
    return Choice(instance=by_name[best.instance_type], tp=best.tp, memory=best.memory, fitting=len(fitting), cheaper_refused=cheaper_refused)


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


def plan_fleet(
    fleet: FleetManifest,
    architecture_of: Callable[[ModelSpec], Any],
    draft_architecture_of: Callable[[ModelSpec], ArchitectureFacts | None] = lambda _: None,
    plan_one: Callable[..., DeploymentPlan] = plan_model,
) -> list[DeploymentPlan]:
    """Plan every model with `plan_one(fleet, spec, facts, draft=...)` (image_plan.plan_any_model
    plans every kind); raise one PlanError listing every model that does not fit."""
    plans, failures = [], []
    for spec in fleet.models:
        try:
            plans.append(plan_one(fleet, spec, architecture_of(spec), draft=draft_architecture_of(spec)))
        except PlanError as exc:
            failures.append(str(exc))
    if failures:
        raise PlanError("\n".join(failures))
    return plans
