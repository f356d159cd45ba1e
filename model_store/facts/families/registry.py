"""One row per Hugging Face `model_type`: the parts its model is composed of and where each
part reads its fields, like vLLM's model registry (vllm/model_executor/models/registry.py).

A row names, for the text model: its attention (`gqa`, `mla`, or per layer from
`block_configs`), how each layer's kind is read (`layout`: full, windowed, state, or MLP
only), which layers are mixtures of experts (`moe_layers`), its recurrent-state layers
(`state`, and where a Mamba-2 row reads their fields), a sparse-attention indexer, and the
small per-family differences a parameter count depends on (q/k/v biases, q/k norms, norms a
layer, attention sinks, an output gate, biased experts, a gated shared expert, ungated MLPs,
multi-token-prediction layers in the checkpoint). A multimodal wrapper adds its vision tower
and the text model type its `text_config` holds. The rows of 2026-11 were checked against
vLLM's model file of the same name (vllm/model_executor/models/, 0.26 and 0.32) and the
Hugging Face modeling code; those added in 2026-12 against vLLM's main branch as read then
(qwen3_next.py, qwen3_5.py, nemotron_h.py, nemotron_nas.py, deepseek_v2.py, qwen3_vl.py,
minimax_m2.py; kimi_k25.py, kimi_k25_vit.py and mimo.py at 055e47c, granitemoehybrid.py at
0195c9e, falcon_h1.py at 0189427, phimoe.py at 0152400).

Adding a model type is one row here; a new kind of part is one module beside this one and
one field value (docs/adding-a-model-family.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from llmfleet.model_store.facts.families.state import Mamba2Keys

# How each decoder layer's attention kind is read, besides an explicit `layer_types` list
# (which always wins): see attention.LAYOUTS.
Layout = Literal[
    "full", "sliding_all", "sliding_opt_in", "gemma2", "gemma3", "llama4_chunked", "interval", "block_pattern",
    "parallel_hybrid",
]
# Which layers are mixtures of experts when the config has experts: see mlp.MOE_LAYOUTS.
MoeLayers = Literal["every", "deepseek", "qwen", "llama4", "block_pattern", "block_configs", "beside_mlp"]
# How a vision tower projects into the LM: Qwen-VL merges 2x2 patches through an MLP (Qwen3-VL
# also from intermediate layers, "deepstack"), Gemma-3 one linear map, LLaVA-style wrappers a
# two-layer MLP (see vision.py).
Projector = Literal["qwen_merger", "qwen3_merger", "linear", "mlp"]


@dataclass(frozen=True)
class Mtp:
    """Multi-token-prediction layers in the checkpoint, which vLLM loads only as a drafter:
    counted in the checkpoint's weights, not in what serving loads."""

    layers_key: str  # the config key with their number
    own_embeddings: bool  # DeepSeek's carry their own embedding and head copies


@dataclass(frozen=True)
class TextParts:
    """The decoder's parts and the per-family details its parameter count depends on."""

    attention: Literal["gqa", "mla", "block_configs", "per_kind"] = "gqa"  # block_configs: per layer
    # (heterogeneous.py); per_kind: each layer kind its own heads and head size (per_kind.py)
    layout: Layout = "full"
    moe_layers: MoeLayers = "every"
    qkv_bias: bool = False  # biases on the q, k and v projections
    qk_norm: bool = False  # an RMSNorm per head on q and k
    norms_per_layer: int = 2  # Gemma-2/3: pre and post norms around attention and MLP
    attention_sinks: bool = False  # gpt-oss: one learned logit per head
    expert_bias: bool = False  # gpt-oss: biases on expert and router projections
    shared_expert_gate: bool = False  # Qwen2-MoE: a sigmoid gate on the shared expert
    mtp: Mtp | None = None
    tied_by_default: bool = False  # tie_word_embeddings when the config does not say
    gated_mlp: bool = True  # gate, up and down projections (Nemotron-H: up and down, relu^2)
    output_gate: bool = False  # Qwen3-Next: q_proj also yields a gate on the attention output
    state: Literal["gated_delta_net", "mamba2"] | None = None  # recurrent-state layers (state.py)
    state_keys: Mamba2Keys | None = None  # where a Mamba-2 row reads its fields
    indexer: bool = False  # DeepSeek sparse attention: an indexer and its key cache per layer
    shared_mlp: str | None = None  # Granite-4.0-H: the key of a gated MLP's width on every layer,
    # the shared expert beside routed experts or, without experts, the dense MLP


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
_GEMMA4 = replace(_GEMMA3, attention="per_kind", moe_layers="beside_mlp")
_LLAMA4 = TextParts(layout="llama4_chunked", moe_layers="llama4")
_MLA = TextParts(attention="mla", moe_layers="deepseek")
_DEEPSEEK_MTP = Mtp("num_nextn_predict_layers", own_embeddings=True)
_QWEN3 = TextParts(layout="sliding_opt_in", qk_norm=True)
_QWEN3_MOE = replace(_QWEN3, moe_layers="qwen")
# Qwen3-Next and Qwen3.5: three gated-delta-net layers, then one full-attention layer with an
# output gate (vLLM qwen3_next.py, qwen3_5.py).
_QWEN3_NEXT = TextParts(
    layout="interval", qk_norm=True, output_gate=True, state="gated_delta_net", moe_layers="qwen",
    shared_expert_gate=True, mtp=Mtp("mtp_num_hidden_layers", own_embeddings=False),
)  # fmt: skip
_NEMOTRON_H = TextParts(
    layout="block_pattern", moe_layers="block_pattern", norms_per_layer=1, gated_mlp=False, state="mamba2",
    state_keys=Mamba2Keys(
        "mamba_num_heads", "mamba_head_dim", "ssm_state_size", "n_groups", "conv_kernel", "chunk_size",
        ssm_dtype="mamba_ssm_cache_dtype", ssm_dtype_default="float32",
    ),
)  # fmt: skip
# Granite-4.0-H and Falcon-H1 name their Mamba-2 fields alike; the mixer's width is Falcon's
# `mamba_d_ssm`, else `mamba_expand` x hidden (vLLM granitemoehybrid.py, falcon_h1.py).
_MAMBA_PREFIXED = Mamba2Keys(
    "mamba_n_heads", "mamba_d_head", "mamba_d_state", "mamba_n_groups", "mamba_d_conv", "mamba_chunk_size",
    inner="mamba_d_ssm", expand="mamba_expand",
)  # fmt: skip

MODEL_TYPES: dict[str, ModelType] = {
    # dense and MoE grouped-query attention
    "llama": ModelType(_GQA),
    "granite": ModelType(_GQA),
    "phi3": ModelType(_GQA),
    "mistral": ModelType(TextParts(layout="sliding_all")),  # sliding_window on every layer (Mistral-7B-v0.1)
    "ministral3": ModelType(TextParts(layout="sliding_all")),
    "mixtral": ModelType(TextParts(layout="sliding_all")),
    # Phi-3.5-MoE: Mixtral-shaped experts, biased q/k/v (o_proj's and lm_head's biases, 0.2 M, are
    # not counted), LayerNorms with biases (two a layer, counted as four norms); vLLM phimoe.py
    # leaves the config's sliding_window to the cache config, so every layer is windowed as in
    # mistral.py
    "phimoe": ModelType(TextParts(layout="sliding_all", qkv_bias=True, norms_per_layer=4)),
    "qwen2": ModelType(_QWEN2),
    "qwen2_moe": ModelType(replace(_QWEN2, moe_layers="qwen", shared_expert_gate=True)),
    # MiMo: Qwen2 with multi-token-prediction layers that share the embeddings (vLLM mimo.py
    # skips `model.mtp_layers.`; mimo_mtp.py loads them as the drafter)
    "mimo": ModelType(replace(_QWEN2, mtp=Mtp("num_nextn_predict_layers", own_embeddings=False))),
    "qwen3": ModelType(_QWEN3),
    "qwen3_moe": ModelType(_QWEN3_MOE),
    "qwen3_vl_text": ModelType(_QWEN3),  # Qwen3 inside the Qwen3-VL wrappers (multimodal rope)
    "qwen3_vl_moe_text": ModelType(_QWEN3_MOE),
    "minimax_m2": ModelType(TextParts(qk_norm=True)),  # 256 experts on every layer, fp8 blocks
    "exaone4": ModelType(TextParts(qk_norm=True)),
    "olmo2": ModelType(TextParts(qk_norm=True)),
    "olmo3": ModelType(TextParts(qk_norm=True)),
    "gpt_oss": ModelType(TextParts(attention_sinks=True, expert_bias=True)),
    "llama4_text": ModelType(_LLAMA4),
    # sliding-window patterns
    "gemma": ModelType(TextParts(tied_by_default=True)),
    "gemma2": ModelType(TextParts(layout="gemma2", norms_per_layer=4, tied_by_default=True)),
    "gemma3_text": ModelType(_GEMMA3),
    # Gemma-4: sliding layers of `head_dim`, full layers of `global_head_dim` (K as V), a
    # dense MLP on every layer with, when `enable_moe_block`, experts beside it (vLLM gemma4.py)
    "gemma4_text": ModelType(_GEMMA4),
    # multi-head latent attention
    "deepseek_v2": ModelType(_MLA),
    "deepseek_v3": ModelType(replace(_MLA, mtp=_DEEPSEEK_MTP)),
    "kimi_k2": ModelType(_MLA),
    # MLA with DeepSeek sparse attention's indexer (vLLM deepseek_v2.py Indexer; GLM-5 reuses it)
    "deepseek_v32": ModelType(replace(_MLA, mtp=_DEEPSEEK_MTP, indexer=True)),
    "glm_moe_dsa": ModelType(replace(_MLA, mtp=_DEEPSEEK_MTP, indexer=True)),
    # recurrent-state hybrids
    "qwen3_next": ModelType(_QWEN3_NEXT),
    "qwen3_5_text": ModelType(_QWEN3_NEXT),
    "qwen3_5_moe_text": ModelType(_QWEN3_NEXT),
    "nemotron_h": ModelType(_NEMOTRON_H),
    # Granite-4.0-H: Mamba-2 or attention layers by `layer_types`, each with routed experts of
    # `intermediate_size` and a shared MLP (or that MLP alone: the dense H-1B, H-Micro)
    "granitemoehybrid": ModelType(
        TextParts(state="mamba2", state_keys=_MAMBA_PREFIXED, shared_mlp="shared_intermediate_size")
    ),
    # Falcon-H1: attention and Mamba-2 side by side in every layer (the mixer's gated norm is
    # counted even where `mamba_rms_norm` leaves it out: `mamba_d_ssm` weights a layer)
    "falcon_h1": ModelType(TextParts(layout="parallel_hybrid", state="mamba2", state_keys=_MAMBA_PREFIXED)),
    # per-layer heterogeneous blocks (Llama-3.1/3.3-Nemotron Super and Ultra)
    "nemotron-nas": ModelType(TextParts(attention="block_configs", moe_layers="block_configs")),
    # multimodal wrappers
    "gemma3": ModelType(_GEMMA3, VisionParts("linear"), "gemma3_text"),
    "gemma4": ModelType(_GEMMA4, VisionParts("linear"), "gemma4_text"),
    # Kimi-K2.5: Kimi-K2 (DeepSeek-V3) text and MoonViT, whose patch merger is Qwen3-VL's shape
    # (a norm, then two biased linears over 2x2 merged patches; vLLM kimi_k25_vit.py)
    "kimi_k25": ModelType(_MLA, VisionParts("qwen3_merger"), "kimi_k2"),
    "llama4": ModelType(_LLAMA4, VisionParts("mlp"), "llama4_text"),
    "llava": ModelType(_GQA, VisionParts("mlp"), "llama"),
    "mistral3": ModelType(_GQA, VisionParts("mlp"), "mistral"),
    "qwen2_vl": ModelType(_QWEN2, VisionParts("qwen_merger")),
    "qwen2_5_vl": ModelType(_QWEN2, VisionParts("qwen_merger", gated_mlp=True)),
    "qwen3_vl": ModelType(_QWEN3, VisionParts("qwen3_merger"), "qwen3_vl_text"),
    "qwen3_vl_moe": ModelType(_QWEN3_MOE, VisionParts("qwen3_merger"), "qwen3_vl_moe_text"),
    "qwen3_5": ModelType(_QWEN3_NEXT, VisionParts("qwen3_merger"), "qwen3_5_text"),
    "qwen3_5_moe": ModelType(_QWEN3_NEXT, VisionParts("qwen3_merger"), "qwen3_5_moe_text"),
}

# Model types vLLM no longer serves, with what it said when it stopped.
NOT_SERVED = {"mllama": "Llama-3.2-Vision (mllama) support was removed in vLLM 0.10.2"}
# Model types vLLM serves whose caches no part mirrors yet, with why.
NOT_MODELLED = {
    "deepseek_v4": (
        "DeepSeek-V4's compressed sparse attention is not modelled: per layer a 128-token sliding-window "
        "cache beside MLA caches compressed 4x (with an indexer) or 128x (`compress_ratios`), and float32 "
        "compressor states, which vLLM 0.26 packs into groups of their own (models/deepseek_v4, "
        "kv_cache_utils.group_and_unify_kv_cache_specs)"
    ),
}

SUPPORTED_MODEL_TYPES = tuple(sorted(MODEL_TYPES))
TEXT_MODEL_TYPES = tuple(sorted(name for name, row in MODEL_TYPES.items() if row.vision is None))

# A model type outside the table is planned only when every key of its config is one the
# default parts (grouped-query attention, a gated SiLU MLP or MoE on every layer, layouts
# from `layer_types`) read, or one that changes neither weights nor caches; anything else
# is refused naming the key. The plan says so in its reasons.
INFERRED = ModelType(TextParts())
INFERRED_REASON = "inferred from structure, not verified on a GPU"
STRUCTURAL_KEYS = frozenset({
    "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size",
    "vocab_size", "attention_bias", "attn_output_gate", "layer_types", "sliding_window", "attention_chunk_size",
    "n_routed_experts", "num_local_experts", "num_experts", "num_experts_per_tok", "experts_per_token",
    "moe_intermediate_size", "shared_expert_intermediate_size", "n_shared_experts", "tie_word_embeddings",
    "quantization_config",
})  # fmt: skip
# Keys whose value must be this for the default parts to describe the model.
STRUCTURAL_VALUES = {"hidden_act": ("silu",), "mlp_bias": (False,), "use_sliding_window": (False,)}
# Keys that change neither the weights' shapes nor what is cached (token ids, rope, init,
# dropout, router training terms, dtypes, provenance).
NEUTRAL_KEYS = frozenset({
    "architectures", "model_type", "transformers_version", "torch_dtype", "dtype", "_name_or_path",
    "bos_token_id", "eos_token_id", "pad_token_id", "initializer_range", "rms_norm_eps", "rope_theta",
    "rope_scaling", "rope_parameters", "partial_rotary_factor", "max_position_embeddings", "use_cache",
    "attention_dropout", "hidden_dropout", "output_router_logits", "router_aux_loss_coef", "norm_topk_prob",
    "routed_scaling_factor", "max_window_layers", "pretraining_tp",
})  # fmt: skip
