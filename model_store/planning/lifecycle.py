"""A server's life as the plan times it: boot and its health-check grace, drain, the root
volume, autoscaling targets and scale-to-zero (wake times, warm pools).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from llmfleet.model_store.contract.manifest import FleetManifest, ModelSpec, ServingSpec
from llmfleet.model_store.contract.plan import AutoscalingPlan, Frozen, GIB, MIB, TimingPlan
from llmfleet.model_store.facts.families import ArchitectureFacts
from llmfleet.model_store.planning.catalog import GpuInstance
from llmfleet.model_store.planning.fit import hourly_price, PlanError
from llmfleet.model_store.contract.targets import SAGEMAKER, TARGETS


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
# must come up: a fresh instance in its target's launch time (contract/targets.py), or, an estimate,
# a stopped warm-pool instance started and its ECS agent registered (~1 min).
WAKE_ALARM_SECONDS = 60
WARM_INSTANCE_START_SECONDS = 60


def kernel_warmup_seconds(arch: ArchitectureFacts) -> int:
    """Seconds of kernel JIT beyond the common phases that this architecture's start adds."""
    has_mamba2 = any(layer.state is not None and layer.state.kind == "mamba2" for layer in arch.kv_layers)
    return MAMBA2_KERNEL_WARMUP_SECONDS if has_mamba2 else 0


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
    if not any(TARGETS[name].warm_pool for name in serving.targets):
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
    for name in targets:
        row = TARGETS[name]
        if row.warm_pool and warm_pool:
            seconds[name] = WAKE_ALARM_SECONDS + WARM_INSTANCE_START_SECONDS + boot - IMAGE_PULL_SECONDS
        else:
            seconds[name] = WAKE_ALARM_SECONDS + row.launch_seconds + boot
    return {name: math.ceil(value) for name, value in seconds.items()}


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
        "sagemaker_instance_type": SAGEMAKER.instance_type(chosen) if SAGEMAKER.name in targets else None,
        "gpu_name": chosen.gpu.name,
        "gpus_per_instance": chosen.gpu_count,
        "gpu_memory_bytes": chosen.gpu_memory_bytes,
        "instance_memory_gib": chosen.memory_gib,
        "instance_nvme_gb": chosen.nvme_gb,
        "root_volume_gib": root_gib,
        "timing": TimingPlan(startup_grace_seconds=grace, drain_seconds=DRAIN_SECONDS, deregistration_delay_seconds=DRAIN_SECONDS),
        "cost_per_hour_usd": round(hourly_price(chosen, targets), 4),
        "price_source": "; ".join(dict.fromkeys(TARGETS[name].price_source(chosen) for name in targets)),
        "reasons": reasons,
    }
