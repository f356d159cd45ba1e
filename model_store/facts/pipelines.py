"""Image-generation pipelines (`kind: image`): what the planner needs from a diffusers checkpoint.

A diffusers checkpoint is a `model_index.json` naming its components (transformer, text
encoders, VAE, tokenizers, scheduler), each in its own folder with a `config.json` and its
safetensors. `PipelineFacts` holds the shapes the image planner reads (transformer width and
depth, patch size, the VAE's channels and scale) and each component's weight bytes. Reading a
local checkpoint and the bundled copies (`known_configs/pipelines/`) is here too; everything
else is pure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from llmfleet.model_store.facts.architectures import KNOWN_CONFIGS, read_checkpoint_weights, read_json_file
from llmfleet.model_store.facts.families import ConfigError

MODEL_INDEX = "model_index.json"
KNOWN_PIPELINES = KNOWN_CONFIGS / "pipelines"
# Bundled copies keep each component's weight bytes here (no safetensors in the repository).
BUNDLED_WEIGHTS = "weights.json"
# Pipelines whose memory the planner models (diffusers' class names); others are refused.
SUPPORTED_PIPELINES = ("StableDiffusion3Pipeline",)
# Text tokens the SD3 transformer attends to jointly with the image: 77 CLIP tokens plus the
# pipeline's default max_sequence_length of 256 T5 tokens (diffusers 0.42 pipeline_stable_diffusion_3.py).
SD3_TEXT_TOKENS = 77 + 256
# safetensors dtype -> bytes per element.
SAFETENSORS_DTYPE_BYTES = {"F32": 4, "BF16": 2, "F16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1}


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ComponentFacts(Frozen):
    """One component with weights: its library and class (model_index.json), config and bytes."""

    library: str
    class_name: str
    config: dict[str, Any]
    weights_bytes_by_dtype: dict[str, int] = Field(description="Safetensors tensor bytes per dtype (BF16, F16...).")

    @property
    def parameters(self) -> int:
        return sum(size // SAFETENSORS_DTYPE_BYTES.get(dtype, 2) for dtype, size in self.weights_bytes_by_dtype.items())


class PipelineFacts(Frozen):
    """A diffusers pipeline as the image planner reads it."""

    pipeline_class: str
    source: str = Field(description="Where the facts were read (local path, bundled id).")
    components: dict[str, ComponentFacts] = Field(description="Components with weights, by model_index.json name.")

    @property
    def parameters(self) -> int:
        return sum(c.parameters for c in self.components.values())

    def component(self, name: str) -> ComponentFacts:
        if name not in self.components:
            raise ConfigError(f"{self.source}: {self.pipeline_class} has no {name!r} component; it has {sorted(self.components)}")
        return self.components[name]

    @property
    def hidden_size(self) -> int:
        """The transformer's width: heads x head_dim (SD3's inner_dim)."""
        config = self.component("transformer").config
        return int(config["num_attention_heads"]) * int(config["attention_head_dim"])

    @property
    def num_layers(self) -> int:
        return int(self.component("transformer").config["num_layers"])

    @property
    def patch_size(self) -> int:
        return int(self.component("transformer").config["patch_size"])

    @property
    def latent_channels(self) -> int:
        return int(self.component("vae").config["latent_channels"])

    @property
    def vae_scale(self) -> int:
        """Pixels per latent along a side: 2 ** (VAE levels - 1)."""
        return 2 ** (len(self.component("vae").config["block_out_channels"]) - 1)

    @property
    def vae_channels(self) -> list[int]:
        return [int(c) for c in self.component("vae").config["block_out_channels"]]

    @property
    def text_tokens(self) -> int:
        return SD3_TEXT_TOKENS

    @property
    def family(self) -> str:
        return f"diffusion ({self.pipeline_class})"


def pipeline_facts(model_index: dict[str, Any], components: dict[str, tuple[dict, dict[str, int] | None]], source: str) -> PipelineFacts:
    """Facts from model_index.json and each weighted component's (config, bytes per dtype); the
    pipeline class and every component the planner reads are checked, naming what is missing."""
    pipeline_class = model_index.get("_class_name")
    if pipeline_class not in SUPPORTED_PIPELINES:
        raise ConfigError(
            f"{source}: {MODEL_INDEX} names pipeline {pipeline_class!r}; the image planner models {list(SUPPORTED_PIPELINES)}"
        )
    facts: dict[str, ComponentFacts] = {}
    for name, entry in sorted(model_index.items()):
        if name.startswith("_") or not isinstance(entry, list) or len(entry) != 2 or None in entry:
            continue
        if name not in components:
            continue  # tokenizers and the scheduler carry no weights
        config, weights = components[name]
        if not weights:
            raise ConfigError(f"{source}: component {name!r} has no safetensors weights")
        facts[name] = ComponentFacts(library=entry[0], class_name=entry[1], config=config, weights_bytes_by_dtype=weights)
    result = PipelineFacts(pipeline_class=pipeline_class, source=source, components=facts)
    for needed in ("transformer", "vae"):
        result.component(needed)
    try:
        result.hidden_size, result.num_layers, result.patch_size, result.latent_channels, result.vae_channels  # noqa: B018
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: a transformer or VAE config.json lacks {exc}") from None
    return result


def _weighted_components(model_index: dict[str, Any]) -> list[str]:
    """Components whose folder holds a model (a config.json), not a tokenizer or scheduler."""
    return [n for n, e in model_index.items() if not n.startswith("_") and isinstance(e, list) and None not in e]


def read_pipeline(directory: str | Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """A local diffusers checkpoint as (model_index.json, {component: {"config", "weights"}}),
    the form the lock records; components without config.json (tokenizers, scheduler) are skipped."""
    directory = Path(directory)
    if not (directory / MODEL_INDEX).is_file():
        raise ConfigError(f"{directory}: no {MODEL_INDEX} (an image model's source is a diffusers pipeline folder)")
    model_index = read_json_file(directory / MODEL_INDEX)
    components = {}
    for name in _weighted_components(model_index):
        folder = directory / name
        if (folder / "config.json").is_file():
            components[name] = {"config": read_json_file(folder / "config.json"), "weights": read_checkpoint_weights(folder)}
    return model_index, components


def known_pipeline_ids() -> list[str]:
    return sorted(p.name.replace("__", "/") for p in KNOWN_PIPELINES.iterdir() if (p / MODEL_INDEX).is_file())


def known_pipeline_dir(hf_id: str) -> Path:
    """The bundled copy of a pipeline's configs (see its SOURCE file)."""
    folder = KNOWN_PIPELINES / hf_id.replace("/", "__")
    if not (folder / MODEL_INDEX).is_file():
        raise ConfigError(f"no bundled pipeline config for {hf_id!r}; bundled: {known_pipeline_ids()}")
    return folder


def read_known_pipeline(hf_id: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Like `read_pipeline`, for a bundled copy: weight bytes come from its weights.json."""
    folder = known_pipeline_dir(hf_id)
    model_index, components = read_pipeline(folder)
    weights = json.loads((folder / BUNDLED_WEIGHTS).read_text(encoding="utf-8"))
    return model_index, {name: {**entry, "weights": weights.get(name)} for name, entry in components.items()}


def facts_from_record(model_index: dict[str, Any], components: dict[str, dict[str, Any]], source: str) -> PipelineFacts:
    return pipeline_facts(model_index, {n: (c["config"], c.get("weights")) for n, c in components.items()}, source)
