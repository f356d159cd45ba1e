"""The plan's types: one frozen, JSON-serialisable plan per model kind (`ServingPlan` for vLLM,
`ImagePlan` for the image server), what the stacks, the container and `status` read; the argv is a
view of it (`vllm_argv`). Decided by planning/, never here.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, model_serializer, Tag, TypeAdapter

from llmfleet.model_store.contract.layout import model_copy, model_key
from llmfleet.model_store.contract.manifest import AdapterRef
from llmfleet.model_store.contract.targets import TargetName


GIB = 2**30
MIB = 2**20
DEFAULT_MODEL_ROOT = "/var/lib/llmfleet/models"


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
    """What the performance model predicts for the fleet at the manifest's `load` (model_store.planning.performance)."""

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
    targets: list[TargetName]
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
            return f"{self.store_uri}/{model_key(self.model_name, self.revision)}"
        return model_copy(model_root, self.model_name, self.revision)

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


Offload = Literal["none", "model"]


class ImageSettings(Frozen):
    """Everything the image server reads from the plan: request defaults, limits and placement."""

    dtype: str = Field(description="torch dtype the pipeline runs in.")
    steps: int = Field(description="Denoising steps when a request names none.")
    max_steps: int
    guidance_scale: float
    size: int = Field(description="Square side when a request names no size.")
    max_size: int = Field(description="Longest side a request may ask for; memory is planned for max_size squared.")
    size_multiple: int = Field(description="Sides must be multiples of this (VAE scale x patch size).")
    max_images: int = Field(description="Most images one request may ask for (OpenAI `n`).")
    max_batch: int = Field(description="Images in flight per GPU: the most one pipeline call generates together.")
    offload: Offload = Field(description="none: every component on the GPU; model: diffusers' model CPU offload.")
    drain_seconds: int = Field(description="How long in-flight images may take to finish after SIGTERM.")


class ImageMemoryPlan(Frozen):
    """GPU memory of one image server (bytes)."""

    parameters: int
    weights_bytes: int
    weights_bytes_by_component: dict[str, int]
    resident_weights_bytes: int = Field(description="Weights on the GPU at the peak: all, or the largest component under offload.")
    activation_bytes_per_image: int = Field(description="Peak activations of one image at max_size squared.")
    reserve_bytes: int
    usable_bytes: int
    peak_bytes: int = Field(description="Resident weights + reserve + activations of max_batch images.")
    max_images_in_flight: int = Field(description="Images whose activations fit beside the weights.")


class ImagePlan(DeploymentPlan):
    """Everything decided about serving one image model with the image server (LLMFLEET_PLAN)."""

    kind: Literal["image"] = "image"
    family: str
    memory: ImageMemoryPlan
    image: ImageSettings


AnyPlan = ServingPlan | ImagePlan


def _kind_of(value: Any) -> str:
    return value.get("kind", "text") if isinstance(value, dict) else getattr(value, "kind", "text")


_ANY_PLAN = TypeAdapter(
    Annotated[Annotated[ServingPlan, Tag("text")] | Annotated[ImagePlan, Tag("image")], Discriminator(_kind_of)]
)


def plan_from_json(text: str) -> AnyPlan:
    """A plan of either kind from LLMFLEET_PLAN (its `kind` field says which; none: text)."""
    return _ANY_PLAN.validate_json(text)
