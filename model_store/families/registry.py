"""One row per Hugging Face `model_type`: the parts its model is composed of and where each
part reads its fields, like vLLM's model registry (vllm/model_executor/models/registry.py).

A row names, for the text model: its attention (`gqa` or `mla`), how each layer's attention
kind is read (`layout`), which layers are mixtures of experts (`moe_layers`), and the small
per-family differences a parameter count depends on (q/k/v biases, q/k norms, four norms a
layer, attention sinks, biased experts, a gated shared expert, multi-token-prediction layers
in the checkpoint). A multimodal wrapper adds its vision tower and the text model type its
`text_config` holds. Every row was checked against vLLM's model file of the same name
(vllm/model_executor/models/, 0.26 and 0.32) and the Hugging Face modeling code (2026-11).

Adding a model type is one row here; a new kind of part is one module beside this one and
one field value (docs/adding-a-model-family.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

# How each decoder layer's attention kind is read, besides an explicit `layer_types` list
# (which always wins): see attention.LAYOUTS.
Layout = Literal["full", "sliding_all", "sliding_opt_in", "gemma2", "gemma3", "llama4_chunked"]
# Which layers are mixtures of experts when the config has experts: see mlp.MOE_LAYOUTS.
MoeLayers = Literal["every", "deepseek", "qwen", "llama4"]
# How a vision tower projects into the LM: Qwen-VL merges 2x2 patches through an MLP,
# Gemma-3 one linear map, LLaVA-style wrappers a two-layer MLP (see vision.py).
Projector = Literal["qwen_merger", "linear", "mlp"]


@dataclass(frozen=True)
class TextParts:
    """The decoder's parts and the per-family details its parameter count depends on."""

    attention: Literal["gqa", "mla"] = "gqa"
    layout: Layout = "full"
    moe_layers: MoeLayers = "every"
    qkv_bias: bool = False  # biases on the q, k and v projections
    qk_norm: bool = False  # an RMSNorm per head on q and k
    norms_per_layer: int = 2  # Gemma-2/3: pre and post norms around attention and MLP
    attention_sinks: bool = False  # gpt-oss: one learned logit per head
    expert_bias: bool = False  # gpt-oss: biases on expert and router projections
    shared_expert_gate: bool = False  # Qwen2-MoE: a sigmoid gate on the shared expert
    mtp: Literal["deepseek"] | None = None  # MTP layers in the checkpoint that vLLM does not load
    tied_by_default: bool = False  # tie_word_embeddings when the config does not say


@dataclass(frozen=True)
class VisionParts:
    """A multimodal wrapper's vision tower."""

    projector: Projector
    gated_mlp: bool = False  # SwiGLU MLP in the encoder layers (Qwen2.5-VL)


@dataclass(frozen=True)
class ModelType:
    """One `model_type`: its text parts and, for a multimodal wrapper, its vision tower and
    the text model type its `text_config` holds when that omits `model_type`."""

    text: TextParts
    vision: VisionParts | None = None
    wrapped_text_type: str | None = None  # None: the LM's keys are at the top level


_GQA = TextParts()
_QWEN2 = TextParts(layout="sliding_opt_in", qkv_bias=True)
_GEMMA3 = TextParts(layout="gemma3", qk_norm=True, norms_per_layer=4, tied_by_default=True)
_LLAMA4 = TextParts(layout="llama4_chunked", moe_layers="llama4")
_MLA = TextParts(attention="mla", moe_layers="deepseek")

MODEL_TYPES: dict[str, ModelType] = {
    # dense and MoE grouped-query attention
    "llama": ModelType(_GQA),
    "granite": ModelType(_GQA),
    "phi3": ModelType(_GQA),
    "mistral": ModelType(TextParts(layout="sliding_all")),  # sliding_window on every layer (Mistral-7B-v0.1)
    "ministral3": ModelType(TextParts(layout="sliding_all")),
    "mixtral": ModelType(TextParts(layout="sliding_all")),
    "qwen2": ModelType(_QWEN2),
    "qwen2_moe": ModelType(replace(_QWEN2, moe_layers="qwen", shared_expert_gate=True)),
    "qwen3": ModelType(TextParts(layout="sliding_opt_in", qk_norm=True)),
    "qwen3_moe": ModelType(TextParts(layout="sliding_opt_in", qk_norm=True, moe_layers="qwen")),
    "exaone4": ModelType(TextParts(qk_norm=True)),
    "olmo2": ModelType(TextParts(qk_norm=True)),
    "olmo3": ModelType(TextParts(qk_norm=True)),
    "gpt_oss": ModelType(TextParts(attention_sinks=True, expert_bias=True)),
    "llama4_text": ModelType(_LLAMA4),
    # sliding-window patterns
    "gemma": ModelType(TextParts(tied_by_default=True)),
    "gemma2": ModelType(TextParts(layout="gemma2", norms_per_layer=4, tied_by_default=True)),
    "gemma3_text": ModelType(_GEMMA3),
    # multi-head latent attention
    "deepseek_v2": ModelType(_MLA),
    "deepseek_v3": ModelType(replace(_MLA, mtp="deepseek")),
    "kimi_k2": ModelType(_MLA),
    # multimodal wrappers
    "gemma3": ModelType(_GEMMA3, VisionParts("linear"), "gemma3_text"),
    "llama4": ModelType(_LLAMA4, VisionParts("mlp"), "llama4_text"),
    "llava": ModelType(_GQA, VisionParts("mlp"), "llama"),
    "mistral3": ModelType(_GQA, VisionParts("mlp"), "mistral"),
    "qwen2_vl": ModelType(_QWEN2, VisionParts("qwen_merger")),
    "qwen2_5_vl": ModelType(_QWEN2, VisionParts("qwen_merger", gated_mlp=True)),
}

# Model types vLLM no longer serves, with what it said when it stopped.
NOT_SERVED = {"mllama": "Llama-3.2-Vision (mllama) support was removed in vLLM 0.10.2"}

SUPPORTED_MODEL_TYPES = tuple(sorted(MODEL_TYPES))
TEXT_MODEL_TYPES = tuple(sorted(name for name, row in MODEL_TYPES.items() if row.vision is None))
