"""The fleet manifest (`fleet.yaml`): schema, loading and validation.

Everything downstream (planner, stacks, entrypoint, CLI) trusts a `FleetManifest`, so all
checks that need only the manifest itself live here, and every error names the file,
the line, the model and the field.
"""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from llmfleet.model_store.contract.kinds import IMAGE, KindName, kind
from llmfleet.model_store.contract.targets import DEFAULT_TARGET, TARGETS, TargetName
from llmfleet.model_store.errors import EXIT_BAD_INPUT, LlmfleetError

DNS_LABEL = r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"
"""Model names become S3 prefixes, ECS service names, SageMaker endpoint names and DNS
labels, so they are held to the strictest of those (40 chars leaves room for suffixes)."""

SAFE_SEGMENT = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
"""Adapter names and revisions become S3 key segments and vLLM model names."""

HUB_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}(@[A-Za-z0-9][A-Za-z0-9._/-]{0,127})?$"
"""A Hugging Face model id, optionally pinned: `org/name` or `org/name@revision`."""

HOSTNAME = r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]$"
"""A DNS name of two labels or more whose last label is not numeric (so never an IP address)."""

CONSUMER_NAME = r"^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$"
"""Gateway consumer names label metrics (CloudWatch dimensions) and usage rows."""

S3_URI = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$"

# vLLM accepts only these LoRA ranks (vllm/config/lora.py, MaxLoRARanks, v0.32, 2026-10).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)

# Reasoning parsers registered in vLLM 0.32 (vllm/reasoning/__init__.py, 2026-11); a unit
# test checks this list against the installed vLLM.
REASONING_PARSERS = (
    "deepseek_r1",
    "deepseek_v3",
    "ernie45",
    "glm45",
    "glm47",
    "granite",
    "hunyuan_a13b",
    "kimi_k2",
    "minimax_m2",
    "mistral",
    "olmo3",
    "openai_gptoss",
    "qwen3",
    "seed_oss",
    "step3",
)


class ManifestError(LlmfleetError):
    """A fleet manifest that cannot be used; the message says where and what is allowed."""

    exit_code = EXIT_BAD_INPUT


class Quantization(str, Enum):
    NONE = "none"
    AWQ = "awq"
    GPTQ = "gptq"
    FP8 = "fp8"
    BITSANDBYTES = "bitsandbytes"


class Strict(BaseModel):
    """Base for every manifest object: unknown keys are errors, objects are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SpeculativeSpec(Strict):
    """Speculative decoding, emitted as vLLM's `--speculative-config` JSON."""

    method: Literal["draft_model", "ngram", "eagle", "eagle3", "mtp"] = Field(
        default="draft_model", description="How tokens are proposed: a small draft model, n-gram lookup, EAGLE heads or MTP layers."
    )
    model: str | None = Field(
        default=None, description="Draft model (HF id or path); required for draft_model, eagle, eagle3."
    )
    num_speculative_tokens: int = Field(default=5, ge=1, le=16, description="Tokens proposed per step, 1-16.")
    prompt_lookup_max: int | None = Field(default=None, ge=1, le=16, description="ngram only.")

    @model_validator(mode="after")
    def _model_needed(self) -> SpeculativeSpec:
        if self.method in ("draft_model", "eagle", "eagle3") and not self.model:
            raise ValueError(f"method {self.method!r} needs a draft 'model'")
        if self.method == "ngram" and self.model:
            raise ValueError("method 'ngram' takes no draft 'model'")
        return self


class AdapterRef(Strict):
    """An adapter the fleet serves from first boot (later ones arrive by promotion)."""

    name: str = Field(pattern=SAFE_SEGMENT, description="The adapter's name: what clients put in `model`.")
    version: str | None = Field(default=None, pattern=SAFE_SEGMENT, description="Pinned version; default: the promoted one.")


class LoraSpec(Strict):
    max_rank: int = Field(default=16, description=f"One of vLLM's ranks: {VLLM_LORA_RANKS}.")
    max_loras: int = Field(default=4, ge=1, le=64, description="Adapters resident on the GPU at once.")
    max_cpu_loras: int | None = Field(default=None, ge=1, le=1024, description="Adapters cached in host RAM.")
    adapters: list[AdapterRef] = Field(default_factory=list, description="Adapters served from the first boot.")

    @field_validator("max_rank")
    @classmethod
    def _rank_allowed(cls, value: int) -> int:
        if value not in VLLM_LORA_RANKS:
            raise ValueError(f"max_rank {value} is not one of vLLM's ranks {list(VLLM_LORA_RANKS)}")
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> LoraSpec:
        names = [a.name for a in self.adapters]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"adapter names must be unique, repeated: {duplicates}")
        if self.max_cpu_loras is not None and self.max_cpu_loras < self.max_loras:
            raise ValueError(f"max_cpu_loras ({self.max_cpu_loras}) must be >= max_loras ({self.max_loras})")
        return self


class ServingSpec(Strict):
    targets: list[TargetName] = Field(
        default_factory=lambda: [DEFAULT_TARGET], min_length=1, description="Where it is served: ECS on GPU EC2 behind an ALB, a SageMaker endpoint, or both."
    )
    instance_type: str | None = Field(default=None, description="Pin an EC2 instance type (e.g. g6e.xlarge).")
    min_capacity: int = Field(
        default=1,
        ge=0,
        le=100,
        description="Fewest servers per target. 0: after idle_minutes without requests a target stops every server "
        "(ECS: tasks and their instances; SageMaker: an inference component on a managed-scaling endpoint), and "
        "the first request after that is refused until one is up again.",
    )
    max_capacity: int = Field(default=2, ge=1, le=100, description="Most servers per target the autoscaler may start.")
    target_concurrency: int = Field(
        default=8, ge=1, le=1024, description="Concurrent requests each server must hold at max_model_len."
    )
    slo_ttft_ms: int | None = Field(
        default=None, ge=50, le=60_000, description="Time-to-first-token objective; tightens autoscaling."
    )
    idle_minutes: int | None = Field(
        default=None,
        ge=5,
        le=1440,
        description="With min_capacity 0: minutes without a request before a target scales to zero (default 30; "
        "at most a day, CloudWatch's longest alarm window).",
    )
    warm_pool: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description="ECS: stopped GPU instances kept booted once with the serving image pulled, so a scale-out skips "
        "the launch and the image pull; each costs its EBS volume only (default: 1 with min_capacity 0, else 0).",
    )

    media_domains: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Hosts a multimodal model may fetch image, audio and video URLs from (exact hostnames, "
        "as vLLM's --allowed-media-domains matches them). Default: none; requests then carry media inline as data: URLs.",
    )

    @field_validator("targets")
    @classmethod
    def _no_repeat(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"targets repeat a value: {value}")
        return value

    @field_validator("media_domains")
    @classmethod
    def _hostnames(cls, value: list[str]) -> list[str]:
        for domain in value:
            if not re.match(HOSTNAME, domain):
                raise ValueError(
                    f"media_domains: {domain!r} is not a lowercase DNS hostname (e.g. images.example.com; "
                    "no scheme, port, path, wildcard or IP address: vLLM compares the URL's host exactly)"
                )
        if len(set(value)) != len(value):
            raise ValueError(f"media_domains repeat a value: {value}")
        return value

    @model_validator(mode="after")
    def _bounds(self) -> ServingSpec:
        if self.min_capacity > self.max_capacity:
            raise ValueError(f"min_capacity ({self.min_capacity}) exceeds max_capacity ({self.max_capacity})")
        if self.idle_minutes is not None and self.min_capacity > 0:
            raise ValueError(
                f"idle_minutes ({self.idle_minutes}) applies only with min_capacity 0, but min_capacity is {self.min_capacity}"
            )
        if self.warm_pool and not any(TARGETS[name].warm_pool for name in self.targets):
            raise ValueError(f"warm_pool ({self.warm_pool}) keeps ECS instances, but targets are {self.targets}")
        if self.warm_pool is not None and self.warm_pool > self.max_capacity:
            raise ValueError(f"warm_pool ({self.warm_pool}) exceeds max_capacity ({self.max_capacity}): more than scaling can use")
        return self


class TokenLengths(Strict):
    """A length distribution by two percentiles: the median sizes the work, p95 the tail."""

    p50: int = Field(ge=1, le=1_048_576, description="Median tokens per request.")
    p95: int = Field(ge=1, le=1_048_576, description="95th-percentile tokens per request (>= p50).")

    @model_validator(mode="after")
    def _ordered(self) -> TokenLengths:
        if self.p95 < self.p50:
            raise ValueError(f"p95 ({self.p95}) is below p50 ({self.p50}); allowed: p95 >= p50")
        return self


SLO_PERCENTILES = (50, 90, 95, 99)


class SloSpec(Strict):
    """Latency objectives the planner sizes the fleet for, at one percentile."""

    ttft_ms: int = Field(ge=10, le=600_000, description="Time to first token, milliseconds.")
    itl_ms: float = Field(gt=0, le=10_000, description="Inter-token latency (time per output token after the first), milliseconds.")
    percentile: int = Field(default=95, description=f"The percentile both objectives hold at: one of {list(SLO_PERCENTILES)}.")

    @field_validator("percentile")
    @classmethod
    def _known_percentile(cls, value: int) -> int:
        if value not in SLO_PERCENTILES:
            raise ValueError(f"percentile {value} is not one of {list(SLO_PERCENTILES)}")
        return value


class LoadSpec(Strict):
    """The traffic a model must serve and its latency objectives; the planner then chooses the
    cheapest instance, tensor-parallel size, replicas and batch size predicted to meet them."""

    requests_per_second: float | None = Field(
        default=None, gt=0, le=100_000, description="Open-loop arrival rate over the whole fleet (give this or concurrency)."
    )
    concurrency: int | None = Field(
        default=None, ge=1, le=100_000, description="Requests in flight over the whole fleet, each sent when one ends (closed loop)."
    )
    prompt_tokens: TokenLengths = Field(description="Prompt length distribution, tokens.")
    output_tokens: TokenLengths = Field(description="Output length distribution, tokens.")
    slo: SloSpec = Field(description="TTFT and inter-token latency objectives at a percentile.")

    @model_validator(mode="after")
    def _one_rate(self) -> LoadSpec:
        if (self.requests_per_second is None) == (self.concurrency is None):
            raise ValueError("give exactly one of 'requests_per_second' (open loop) and 'concurrency' (closed loop)")
        return self


class ImageSpec(Strict):
    """An image-generation pipeline's request defaults and limits (`kind: image`); the plan sizes
    activation memory for `max_size` squared at the fleet's `target_concurrency` images in flight."""

    steps: int = Field(default=4, ge=1, le=200, description="Denoising steps when a request names none (SD3.5 Large Turbo: 4).")
    max_steps: int = Field(default=50, ge=1, le=200, description="Most steps a request may ask for.")
    guidance_scale: float = Field(default=0.0, ge=0.0, le=30.0, description="Classifier-free guidance; 0 (turbo models) runs one pass per step.")
    size: int = Field(default=1024, ge=64, le=2048, multiple_of=16, description="Side of the square image when a request names no size, pixels.")
    max_size: int = Field(default=1024, ge=64, le=2048, multiple_of=16, description="Longest side a request may ask for, pixels; memory is planned for it.")
    max_images: int = Field(default=4, ge=1, le=16, description="Most images one request may ask for (OpenAI `n`).")

    @model_validator(mode="after")
    def _limits(self) -> ImageSpec:
        if self.steps > self.max_steps:
            raise ValueError(f"steps ({self.steps}) exceeds max_steps ({self.max_steps})")
        if self.size > self.max_size:
            raise ValueError(f"size ({self.size}) exceeds max_size ({self.max_size})")
        return self


# Fields that only mean something for a text model, and what an image model says instead.
_TEXT_ONLY_FIELDS = {
    "lora": "LoRA adapters are served for text models only",
    "reasoning_parser": "a reasoning parser reads generated text",
    "speculative": "speculative decoding proposes text tokens",
    "quantization": "the image server runs the pipeline in its dtype",
    "kv_cache_dtype": "a diffusion pipeline has no KV cache",
    "max_model_len": "an image model has no context length; limit images with image.max_size",
    "language_model_only": "this is for multimodal text models",
    "load_format": "the image server loads the pipeline from its synced copy",
    "aliases": "aliases name a base model for adapters",
}


class ModelSpec(Strict):
    name: str = Field(pattern=DNS_LABEL, description="DNS-safe: lowercase letters, digits, '-'; 1-40 chars.")
    source: str = Field(
        description="Where the weights are: the model's place in the store (s3://<store>/models/<name>; "
        "default: under the fleet's `store`), or a local checkpoint directory holding config.json."
    )
    architecture: str | None = Field(
        default=None,
        pattern=HUB_ID,
        description="Hugging Face id whose config.json describes the model (org/name or org/name@revision); "
        "`llmfleet lock` resolves it. Not needed when the source or the store holds config.json.",
    )
    aliases: list[str] = Field(
        default_factory=list, description="Other names adapters may give as base_model_name_or_path."
    )
    revision: str = Field(default="main", pattern=SAFE_SEGMENT, description="The store revision served (models/<name>/<revision>/).")
    dtype: Literal["auto", "bfloat16", "float16"] = Field(
        default="auto", description="Activation dtype; auto: the checkpoint's (bfloat16 when it is float32)."
    )
    quantization: Quantization | None = Field(
        default=None, description="Leave unset to detect it from the checkpoint's quantization_config."
    )
    kv_cache_dtype: Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2"] = Field(
        default="auto", description="KV cache element type; fp8 halves the cache (needs an FP8 GPU)."
    )
    max_model_len: int = Field(
        default=4096, ge=128, le=1_048_576, description="Longest request (prompt + output tokens) each server accepts."
    )
    reasoning_parser: str | None = Field(default=None, description=f"One of {list(REASONING_PARSERS)}.")
    speculative: SpeculativeSpec | None = Field(default=None, description="Speculative decoding; none by default.")
    lora: LoraSpec | None = Field(default=None, description="Serve LoRA adapters on this model; off by default.")
    language_model_only: bool = Field(
        default=False,
        description="Serve a multimodal checkpoint as text only: vLLM does not load its vision encoder "
        "(less GPU memory) and refuses image inputs.",
    )
    load_format: Literal["auto", "runai_streamer"] = Field(
        default="auto", description="runai_streamer streams weights from S3 instead of syncing them first."
    )
    serving: ServingSpec = Field(default_factory=ServingSpec, description="Targets, capacity, concurrency and SLO.")
    load: LoadSpec | None = Field(
        default=None,
        description="Traffic and latency objectives: the planner sizes instance, replicas and batching for them "
        "with its performance model. Without it, serving.target_concurrency (its shorthand) sizes one server.",
    )
    kind: KindName = Field(
        default="text",
        description="text: an LLM served by vLLM; image: a diffusers text-to-image pipeline (model_index.json) "
        "served by the image server, where target_concurrency counts images in flight.",
    )
    image: ImageSpec | None = Field(default=None, description="Request defaults and limits of an image model (kind: image).")

    @field_validator("source")
    @classmethod
    def _source_form(cls, value: str) -> str:
        if value.startswith("s3://"):
            if not re.match(S3_URI, value):
                raise ValueError(f"{value!r} is not an s3://bucket/prefix URI")
        elif value.startswith("hf://"):
            raise ValueError(
                f"{value!r}: weights are served from the store; set architecture: {value.removeprefix('hf://')} "
                "for planning and upload the weights with `llmfleet model upload`"
            )
        elif "://" in value:
            raise ValueError(f"{value!r}: only s3:// URIs or local directories are allowed")
        return value

    @field_validator("reasoning_parser")
    @classmethod
    def _parser_known(cls, value: str | None) -> str | None:
        if value is not None and value not in REASONING_PARSERS:
            raise ValueError(f"{value!r} is not a vLLM reasoning parser; allowed: {list(REASONING_PARSERS)}")
        return value

    @model_validator(mode="after")
    def _kind_fields(self) -> ModelSpec:
        if kind(self.kind) is not IMAGE and self.image is not None:
            raise ValueError("field 'image' is for image models: set kind: image, or remove it")
        if not kind(self.kind).makes_tokens:
            clash = sorted(self.model_fields_set & set(_TEXT_ONLY_FIELDS))
            if clash:
                raise ValueError(f"field {clash[0]!r} is not allowed on an image model (kind: image): {_TEXT_ONLY_FIELDS[clash[0]]}")
            if self.serving.slo_ttft_ms is not None:
                raise ValueError("field 'serving.slo_ttft_ms' is not allowed on an image model (kind: image): it makes no tokens")
            if self.serving.media_domains:
                raise ValueError("field 'serving.media_domains' is not allowed on an image model (kind: image): it fetches no media")
        return self

    @model_validator(mode="after")
    def _load_fits(self) -> ModelSpec:
        if self.load is None:
            return self
        if not kind(self.kind).makes_tokens:
            raise ValueError("field 'load' is for text models: an image model makes no tokens")
        for field in ("target_concurrency", "slo_ttft_ms"):
            if field in self.serving.model_fields_set:
                raise ValueError(
                    f"field 'serving.{field}' and field 'load' both size the fleet: keep 'load' "
                    f"({'load.concurrency' if field == 'target_concurrency' else 'load.slo.ttft_ms'} replaces it)"
                )
        longest = self.load.prompt_tokens.p95 + self.load.output_tokens.p95
        if longest > self.max_model_len:
            raise ValueError(
                f"field 'load': p95 prompt + p95 output = {longest} tokens exceeds max_model_len {self.max_model_len}; "
                "allowed: at most max_model_len"
            )
        return self

    @model_validator(mode="after")
    def _combinations(self) -> ModelSpec:
        if self.load_format == "runai_streamer" and not self.source.startswith("s3://"):
            raise ValueError("load_format 'runai_streamer' needs an s3:// source")
        if self.source.startswith("s3://"):
            # The store keeps a model at <store>/models/<name>/<revision>/ (model_store/store/store.py);
            # a source elsewhere would plan one path and serve another.
            if not self.source.rstrip("/").endswith(f"/models/{self.name}"):
                raise ValueError(
                    f"source {self.source!r} must be the model's place in the store, "
                    f"s3://<bucket>[/<prefix>]/models/{self.name}"
                )
        return self

    @property
    def image_spec(self) -> ImageSpec:
        """An image model's `image` settings, their defaults when the manifest gives none."""
        return self.image or ImageSpec()

    @property
    def is_local_source(self) -> bool:
        return not self.source.startswith("s3://")

    @property
    def hub_id(self) -> str | None:
        """The Hub repository of `architecture`, without its revision."""
        return self.architecture.split("@", 1)[0] if self.architecture else None

    @property
    def hub_revision(self) -> str | None:
        """The revision pinned in `architecture` (org/name@revision), if any."""
        return self.architecture.split("@", 1)[1] if self.architecture and "@" in self.architecture else None

    @property
    def store_uri(self) -> str | None:
        """The store (`s3://bucket[/prefix]`) an s3:// source lives in; None for a local source."""
        if self.is_local_source:
            return None
        return self.source.rstrip("/").removesuffix(f"/models/{self.name}")


class PriceSpec(Strict):
    """What a model's tokens cost a consumer's budget, in USD per million tokens."""

    prompt_usd_per_million: float = Field(ge=0, le=10_000, description="Per million prompt tokens.")
    completion_usd_per_million: float = Field(ge=0, le=10_000, description="Per million completion tokens.")


CONSUMERS_FILE = r"^[A-Za-z0-9_.][A-Za-z0-9_./-]{0,254}\.ya?ml$"
"""A consumers file beside the fleet file: a relative .yaml path, no scheme."""


class GatewaySpec(Strict):
    """One OpenAI endpoint for the whole fleet: keys, limits, budgets and usage per consumer."""

    enabled: bool = Field(
        default=False,
        description="true: one public load balancer (with the WAF) in front of the gateway, and the models' "
        "load balancers internal; false: each ECS model keeps its own public load balancer and key.",
    )
    consumers: str | None = Field(
        default=None,
        pattern=CONSUMERS_FILE,
        description="The consumers file (names, models, rpm, tpm, monthly budget), relative to the fleet file.",
    )
    fallbacks: dict[str, list[str]] = Field(
        default_factory=dict,
        description="model -> ordered fallback models, tried when it fails (each a model of the fleet, of the same kind).",
    )
    prices: dict[str, PriceSpec] = Field(
        default_factory=dict,
        description="model -> USD per million prompt and completion tokens, charged to budgets; default: the plan's "
        "predicted $ per million output tokens (models with a `load`) for completion tokens.",
    )

    @field_validator("consumers")
    @classmethod
    def _beside_fleet(cls, value: str | None) -> str | None:
        if value is not None and ".." in value.split("/"):
            raise ValueError(f"consumers {value!r} must stay beside the fleet file; allowed: a relative path without '..'")
        return value


def require_unique(what: str, names: list[str]) -> None:
    """Refuse a list of names with repeats, naming each repeated one (shared by every named list)."""
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{what} names must be unique, repeated: {repeated}")


class FleetManifest(Strict):
    name: str = Field(pattern=DNS_LABEL, description="The fleet's name: prefixes stacks, services and endpoints.")
    region: str = Field(default="us-east-1", pattern=r"^[a-z]{2}(-[a-z]+)+-\d$", description="AWS region.")
    stage: str = Field(default="prod", pattern=r"^[a-z][a-z0-9-]{0,19}$", description="Deployment stage (prod, dev...).")
    store: str | None = Field(
        default=None,
        pattern=S3_URI,
        description="The model store, s3://bucket[/prefix]; a model without `source` lives at <store>/models/<name>.",
    )
    models: list[ModelSpec] = Field(min_length=1, description="The models the fleet serves, each planned on its own.")
    gateway: GatewaySpec = Field(default_factory=GatewaySpec, description="One endpoint for the fleet; off by default.")

    @model_validator(mode="before")
    @classmethod
    def _sources_from_store(cls, data: Any) -> Any:
        """A model without `source` is the store's `models/<name>`."""
        if not isinstance(data, dict) or not isinstance(data.get("models"), list):
            return data
        store = data.get("store")
        models = []
        for entry in data["models"]:
            if isinstance(entry, dict) and entry.get("source") is None and isinstance(store, str) and "name" in entry:
                filled = type(entry)({**entry, "source": f"{store.rstrip('/')}/models/{entry['name']}"})
                filled.__dict__.update(getattr(entry, "__dict__", {}))  # keep the YAML line numbers for errors
                entry = filled
            models.append(entry)
        return {**data, "models": models}

    @field_validator("models")
    @classmethod
    def _unique_models(cls, value: list[ModelSpec]) -> list[ModelSpec]:
        require_unique("model", [m.name for m in value])
        return value

    @model_validator(mode="after")
    def _gateway_models(self) -> FleetManifest:
        kinds = {m.name: m.kind for m in self.models}
        for model, fallbacks in self.gateway.fallbacks.items():
            for name in (model, *fallbacks):
                if name not in kinds:
                    raise ValueError(f"gateway.fallbacks: {name!r} is not a model of the fleet; allowed: {sorted(kinds)}")
            if model in fallbacks or len(set(fallbacks)) != len(fallbacks):
                raise ValueError(f"gateway.fallbacks.{model}: {fallbacks} must not repeat a model or name {model!r} itself")
            other = [f for f in fallbacks if kinds[f] != kinds[model]]
            if other:
                raise ValueError(f"gateway.fallbacks.{model}: {other} are not {kinds[model]} models like {model!r}")
        unknown = sorted(set(self.gateway.prices) - set(kinds))
        if unknown:
            raise ValueError(f"gateway.prices: {unknown} are not models of the fleet; allowed: {sorted(kinds)}")
        return self

    def model(self, name: str) -> ModelSpec:
        for spec in self.models:
            if spec.name == name:
                return spec
        raise ManifestError(f"fleet {self.name!r} has no model {name!r}; it has {[m.name for m in self.models]}")

    def store_for(self, model: str) -> str | None:
        """The store holding `model`'s weights, adapters and registry: the store of its s3://
        source when the fleet lists it so, else the fleet's `store` (None when neither is known)."""
        listed = next((spec for spec in self.models if spec.name == model), None)
        return (listed.store_uri if listed else None) or self.store


# --- loading -----------------------------------------------------------------------------


class _LineLoader(yaml.SafeLoader):
    """A safe loader that remembers where each mapping key sits, for error messages."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[str, Any]:
    mapping = _LineMapping(loader.construct_mapping(node, deep=True))
    mapping.lines = {key.value: key.start_mark.line + 1 for key, _ in node.value if hasattr(key, "value")}
    mapping.line = node.start_mark.line + 1
    return mapping


class _LineMapping(dict):
    lines: dict[str, int]
    line: int


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line_of(document: Any, location: tuple[int | str, ...]) -> int | None:
    """The YAML line of the deepest key on `location` that exists in the document."""
    node, line = document, None
    for part in location:
        if isinstance(node, _LineMapping):
            line = node.lines.get(str(part), node.line) if isinstance(part, str) else node.line
            node = node.get(part) if isinstance(part, str) else None
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
            line = node.line if isinstance(node, _LineMapping) else line
        else:
            break
    return line


_PATTERN_MEANING = {
    DNS_LABEL: "lowercase letters, digits and '-', 1-40 characters, starting and ending alphanumeric",
    SAFE_SEGMENT: "letters, digits, '.', '_', '-', 1-64 characters, starting alphanumeric (no '/')",
    HUB_ID: "a Hugging Face id, org/name or org/name@revision",
    CONSUMER_NAME: "lowercase letters, digits and '-', 1-64 characters, starting and ending alphanumeric",
}


# Lists of named entries, and what an error calls one of their entries.
_NAMED_LISTS = {"models": "model", "consumers": "consumer"}


def _describe(document: Any, error: dict[str, Any]) -> str:
    location = tuple(error["loc"])
    where = []
    if len(location) >= 2 and location[0] in _NAMED_LISTS and isinstance(location[1], int):
        entries = document.get(location[0]) if isinstance(document, dict) else None
        entry = entries[location[1]] if isinstance(entries, list) and location[1] < len(entries) else None
        label = entry.get("name") if isinstance(entry, dict) else None
        noun = _NAMED_LISTS[location[0]]
        where.append(f"{noun} {label!r}" if label else f"{location[0]}[{location[1]}]")
        field = ".".join(str(p) for p in location[2:])
    else:
        field = ".".join(str(p) for p in location)
    kind = error["type"]
    message = error["msg"].removeprefix("Value error, ")
    if kind == "missing" and location[-1:] == ("source",):
        message = "missing: give the model's s3:// place in the store or a local directory, or set the fleet's 'store'"
    elif kind == "extra_forbidden":
        message = "unknown key (not part of the fleet schema; see `llmfleet schema`)"
    elif kind == "string_pattern_mismatch":
        pattern = error.get("ctx", {}).get("pattern", "")
        message = f"must be {_PATTERN_MEANING.get(pattern, f'matching {pattern}')}"
    if kind not in ("missing", "extra_forbidden", "value_error") and not isinstance(error.get("input"), dict | list):
        message = f"{message} (got {error['input']!r})"
    if field:
        where.append(f"field {field!r}")
    return f"{', '.join(where) or 'fleet'}: {message}"


def read_yaml_mapping(text: str, origin: str, what: str) -> dict[str, Any]:
    """A YAML mapping whose keys remember their lines; ManifestError naming `origin` otherwise."""
    try:
        document = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - _LineLoader is a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{origin}:{mark.line + 1}" if mark else origin
        raise ManifestError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    except RecursionError:
        raise ManifestError(f"{origin}: nested too deeply to be {what}") from None
    return document


def validate_document(model: type[BaseModel], document: dict[str, Any], origin: str) -> Any:
    """`model` validated from `document`; every error one line with file, line, entry and field."""
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            line = _line_of(document, tuple(error["loc"]))
            lines.append(f"{origin}:{line or 1}: {_describe(document, error)}")
        raise ManifestError("\n".join(lines)) from None


def parse_fleet(text: str, origin: str = "<fleet>") -> FleetManifest:
    """Parse and validate a fleet manifest; raise ManifestError naming file, line, model and field."""
    document = read_yaml_mapping(text, origin, "a fleet manifest")
    if not isinstance(document, dict):
        raise ManifestError(f"{origin}: a fleet manifest is a mapping with 'name' and 'models'")
    return validate_document(FleetManifest, document, origin)


def read_text(path: Path, what: str) -> str:
    """The file's text; a missing or binary file is a ManifestError, not a traceback."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read the {what}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not a {what}: byte {exc.start} is not UTF-8 text") from None


def load_fleet(path: str | Path) -> FleetManifest:
    """Read `path` and parse it; a missing file is a ManifestError, not a traceback."""
    return parse_fleet(read_text(Path(path), "fleet manifest"), origin=str(path))


def fleet_json_schema() -> dict[str, Any]:
    """JSON Schema of fleet.yaml, for editors (yaml-language-server) and CI linting."""
    schema = FleetManifest.model_json_schema()
    # A model's `source` may be left out when the fleet names its `store` (filled in as
    # <store>/models/<name> before validation), so editors must not demand it.
    model = schema["$defs"]["ModelSpec"]
    model["required"] = [key for key in model["required"] if key != "source"]
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "llmfleet fleet manifest"
    return schema


__all__ = [
    "AdapterRef",
    "FleetManifest",
    "GatewaySpec",
    "ImageSpec",
    "LoadSpec",
    "LoraSpec",
    "ManifestError",
    "ModelSpec",
    "PriceSpec",
    "Quantization",
    "REASONING_PARSERS",
    "SLO_PERCENTILES",
    "ServingSpec",
    "SloSpec",
    "SpeculativeSpec",
    "TokenLengths",
    "VLLM_LORA_RANKS",
    "fleet_json_schema",
    "load_fleet",
    "parse_fleet",
    "read_text",
    "read_yaml_mapping",
    "validate_document",
]
