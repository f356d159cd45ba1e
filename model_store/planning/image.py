"""The image-model planner: a diffusers pipeline's components, its activations at the
manifest's image size, and the cheapest instance that holds them.
"""

from __future__ import annotations

from collections.abc import Sequence

from llmfleet.model_store.contract.manifest import FleetManifest, ModelSpec
from llmfleet.model_store.contract.plan import AutoscalingPlan, GIB, ImageMemoryPlan, ImagePlan, ImageSettings, Offload
from llmfleet.model_store.facts.pipelines import PipelineFacts, SAFETENSORS_DTYPE_BYTES
from llmfleet.model_store.planning.catalog import GpuInstance, INSTANCES
from llmfleet.model_store.planning.fit import Candidate, cheapest_fit, hardware_refusal, hourly_price, PlanError
from llmfleet.model_store.planning.lifecycle import (
    boot_seconds,
    deployment_fields,
    DRAIN_SECONDS,
    root_volume_gib,
    scale_to_zero,
    SHUTDOWN_MARGIN_SECONDS,
    startup_grace,
)
from llmfleet.model_store.planning.text import GPU_MEMORY_UTILIZATION, RUNTIME_RESERVE_BYTES


# Tensors of the transformer's width alive per token inside one joint block at once: q, k, v and
# the attention output for both streams, the MLP's 4x-wide hidden and its activation, the
# residual and the AdaLN-modulated input (SDPA's fused kernels keep no tokens x tokens matrix).
# An estimate: scripts/image_gpu_bench.py measures the peak it should bound.
TRANSFORMER_TENSORS_PER_TOKEN = 16
# Tensors of the VAE decoder's widest upsampled stage held at once (input, conv output,
# group-norm temporaries, the skip). Measured on an H200 with SD3.5 Large Turbo at 512, 768 and
# 1024 px (tests/data/image_gpu_measurements.json): 4.6-4.8 of them per image, rounded up.
VAE_WORKING_TENSORS = 5
ACTIVATION_BYTES = 2  # bf16/fp16
# The image server: Python, torch and diffusers imports, building the pipeline, one warm-up image.
IMAGE_SERVER_START_SECONDS = 60
# Seconds one 1024-pixel, 4-step image takes on a current GPU, for the ALB request-count fallback
# (SD3.5 Large Turbo; replace with the figure scripts/image_gpu_bench.py records).
ASSUMED_IMAGE_SECONDS = 4
# Host memory the weights must fit in, with room for the OS and the server, under CPU offload.
HOST_MEMORY_SHARE = 0.8


def component_bytes(facts: PipelineFacts, dtype: str) -> dict[str, int]:
    """Each component's weights at the serving dtype: stored 16-bit components as they are,
    others (fp32 checkpoints) converted."""
    element = 2 if dtype in ("bfloat16", "float16") else 4
    sizes = {}
    for name, component in facts.components.items():
        sizes[name] = sum(size // SAFETENSORS_DTYPE_BYTES.get(d, 2) * element for d, size in component.weights_bytes_by_dtype.items())
    return sizes


def activation_bytes_per_image(facts: PipelineFacts, side: int, guidance_scale: float) -> int:
    """Peak activations one square image of `side` pixels adds: the larger of a transformer block
    (doubled under classifier-free guidance, which runs a second, unconditional pass) and the
    VAE decode's widest full-resolution stage."""
    latent_side = side // facts.vae_scale
    image_tokens = (latent_side // facts.patch_size) ** 2
    passes = 2 if guidance_scale > 1 else 1
    transformer = passes * (image_tokens + facts.text_tokens) * facts.hidden_size * TRANSFORMER_TENSORS_PER_TOKEN * ACTIVATION_BYTES
    # Decoder stages run widest-first; stage i ends upsampled to side / 2**(levels-2-i) (the last is not upsampled).
    channels = list(reversed(facts.vae_channels))
    levels = len(channels)
    stage_bytes = [
        c * (side // 2 ** max(0, levels - 2 - i)) ** 2 * ACTIVATION_BYTES for i, c in enumerate(channels)
    ]
    vae = VAE_WORKING_TENSORS * max(stage_bytes)
    return max(transformer, vae)


def _memory(facts: PipelineFacts, spec: ModelSpec, dtype: str, gpu_bytes: int, offload: Offload) -> ImageMemoryPlan:
    image = spec.image_spec
    sizes = component_bytes(facts, dtype)
    weights = sum(sizes.values())
    resident = max(sizes.values()) if offload == "model" else weights
    per_image = activation_bytes_per_image(facts, image.max_size, image.guidance_scale)
    usable = int(gpu_bytes * GPU_MEMORY_UTILIZATION)
    room = usable - resident - RUNTIME_RESERVE_BYTES
    batch = spec.serving.target_concurrency
    return ImageMemoryPlan(
        parameters=facts.parameters,
        weights_bytes=weights,
        weights_bytes_by_component=sizes,
        resident_weights_bytes=resident,
        activation_bytes_per_image=per_image,
        reserve_bytes=RUNTIME_RESERVE_BYTES,
        usable_bytes=usable,
        peak_bytes=resident + RUNTIME_RESERVE_BYTES + batch * per_image,
        max_images_in_flight=max(0, room // per_image),
    )


def _evaluate(facts: PipelineFacts, spec: ModelSpec, dtype: str, offload: Offload, candidate: GpuInstance) -> list[Candidate]:
    """One GPU per server (a pipeline does not split across GPUs here): does it hold the weights
    and `target_concurrency` images in flight?"""
    refusal = hardware_refusal(spec, dtype, None, candidate)
    if refusal:
        return [Candidate(instance_type=candidate.name, tp=0, memory=None, why_not=refusal)]
    memory = _memory(facts, spec, dtype, candidate.gpu_memory_bytes, offload)
    wanted = spec.serving.target_concurrency
    why_not = None
    if offload == "model" and memory.weights_bytes > candidate.memory_gib * GIB * HOST_MEMORY_SHARE:
        why_not = f"CPU offload needs the {memory.weights_bytes / GIB:.1f} GiB of weights in host memory; {candidate.memory_gib} GiB x {HOST_MEMORY_SHARE}"
    elif memory.max_images_in_flight < wanted:
        why_not = (
            f"{'largest component' if offload == 'model' else 'weights'} {memory.resident_weights_bytes / GIB:.1f} GiB + reserve "
            f"{memory.reserve_bytes / GIB:.1f} leave room for {memory.max_images_in_flight} images in flight of "
            f"{memory.activation_bytes_per_image / GIB:.2f} GiB at {spec.image_spec.max_size}px in the usable "
            f"{memory.usable_bytes / GIB:.1f} GiB; target_concurrency needs {wanted}"
        )
    return [
        Candidate(
            instance_type=candidate.name, tp=1, memory=memory, why_not=why_not,
            headroom=memory.usable_bytes - memory.peak_bytes,
        )
    ]  # fmt: skip


def _autoscaling(spec: ModelSpec, boot: float, root_gib: int) -> tuple[AutoscalingPlan, list[str]]:
    """Scale on images waiting: a server works through one batch of target_concurrency at a time.
    Idle scale-in and the warm pool as for a text model (plan.scale_to_zero)."""
    serving = spec.serving
    zero_fields, zero_reasons = scale_to_zero(spec, boot, root_gib)
    plan = AutoscalingPlan(
        min_capacity=serving.min_capacity,
        max_capacity=serving.max_capacity,
        target_queue_depth=float(serving.target_concurrency),
        target_requests_per_minute=max(1, 60 // ASSUMED_IMAGE_SECONDS),
        **zero_fields,
    )
    why = (
        f"scale when more than {serving.target_concurrency} images wait per server (one batch behind); "
        f"request-count fallback {plan.target_requests_per_minute}/min at ~{ASSUMED_IMAGE_SECONDS}s per image"
    )
    return plan, [why, *zero_reasons]


def plan_image_model(
    fleet: FleetManifest, spec: ModelSpec, facts: PipelineFacts, *, catalog: Sequence[GpuInstance] = INSTANCES
) -> ImagePlan:
    """Choose the instance and placement for an image pipeline; raise PlanError with the numbers."""
    image = spec.image_spec
    dtype = "bfloat16" if spec.dtype == "auto" else spec.dtype
    multiple = facts.vae_scale * facts.patch_size
    for field in ("size", "max_size"):
        if getattr(image, field) % multiple:
            raise PlanError(f"model {spec.name!r}, field 'image.{field}': {getattr(image, field)} is not a multiple of {multiple} (VAE scale x patch size)")
    if image.max_images > spec.serving.target_concurrency:
        raise PlanError(
            f"model {spec.name!r}, field 'image.max_images': {image.max_images} images in one request run as one batch, "
            f"more than the {spec.serving.target_concurrency} images in flight the plan sizes memory for "
            "(serving.target_concurrency); lower max_images or raise target_concurrency"
        )
    offload: Offload = "none"
    try:
        choice = cheapest_fit(spec, catalog, lambda c: _evaluate(facts, spec, dtype, "none", c))
        placement = "every component on the GPU"
    except PlanError as on_gpu:
        offload = "model"
        try:
            choice = cheapest_fit(spec, catalog, lambda c: _evaluate(facts, spec, dtype, "model", c))
        except PlanError as offloaded:
            raise PlanError(f"{on_gpu}\nwith model CPU offload: {offloaded}") from None
        placement = f"model CPU offload (one component on the GPU at a time, slower): {str(on_gpu).split(': ', 1)[-1]}"
    chosen, memory = choice.instance, choice.memory
    boot, breakdown = boot_seconds(memory.weights_bytes, False, IMAGE_SERVER_START_SECONDS, "image server start", "estimate")
    grace, grace_reason = startup_grace(boot, breakdown)
    root_gib = root_volume_gib(memory.weights_bytes, chosen.nvme_gb)
    autoscaling, scaling_reasons = _autoscaling(spec, boot, root_gib)
    by_part = ", ".join(f"{n} {b / GIB:.2f}" for n, b in sorted(memory.weights_bytes_by_component.items(), key=lambda i: -i[1]))
    reasons = [
        f"{facts.family}, facts from {facts.source}; weights {memory.weights_bytes / GIB:.2f} GiB in {dtype} "
        f"({memory.parameters / 1e9:.2f} B params: {by_part} GiB)",
        f"{placement}",
        f"activations {memory.activation_bytes_per_image / GIB:.2f} GiB per {image.max_size}x{image.max_size} image "
        f"(max of a transformer block over {(image.max_size // multiple) ** 2} image + {facts.text_tokens} text tokens "
        f"and the VAE decode{', x2 for guidance' if image.guidance_scale > 1 else ''})",
        f"{chosen.name} (${hourly_price(chosen, spec.serving.targets):.2f}/h for {'+'.join(spec.serving.targets)}) is the cheapest of "
        f"{choice.fitting} fitting choices; one pipeline on 1 of {chosen.gpu_count} x {chosen.gpu.name} {chosen.gpu.memory_mib / 1024:.1f} GiB",
        f"per GPU: {memory.usable_bytes / GIB:.1f} GiB usable (x{GPU_MEMORY_UTILIZATION}) holds {memory.max_images_in_flight} images in flight; "
        f"planned batch {spec.serving.target_concurrency} (target_concurrency) peaks at {memory.peak_bytes / GIB:.1f} GiB",
        *[f"not {c.instance_type}: {c.why_not}" for c in choice.cheaper_refused[:3]],
        grace_reason,
        *scaling_reasons,
    ]
    return ImagePlan(
        **deployment_fields(fleet, spec, chosen, grace, root_gib, reasons),
        architecture=facts.source,
        tensor_parallel_size=1,
        autoscaling=autoscaling,
        family=facts.family,
        memory=memory,
        image=ImageSettings(
            dtype=dtype,
            steps=image.steps,
            max_steps=image.max_steps,
            guidance_scale=image.guidance_scale,
            size=image.size,
            max_size=image.max_size,
            size_multiple=multiple,
            max_images=image.max_images,
            max_batch=spec.serving.target_concurrency,
            offload=offload,
            drain_seconds=DRAIN_SECONDS - SHUTDOWN_MARGIN_SECONDS,
        ),
    )


def latency_alarm_ms(plan: ImagePlan, factor: int = 4) -> int:
    """The p99 request latency an image model's alarm fires at: a request waits for at most one
    batch ahead of it and runs in one (2 x max_batch images at ~ASSUMED_IMAGE_SECONDS each), times
    `factor` before anyone is woken."""
    return 2 * plan.image.max_batch * ASSUMED_IMAGE_SECONDS * factor * 1000
