"""Grouped-query attention: parameters, LoRA shapes and the per-layer layout of its KV cache.

The layout says which layers see the whole context (full), only the last `window` tokens
(sliding) or only their own `chunk` (chunked local, Llama-4), as vLLM's model files assign
them (vllm/model_executor/models/{gemma2,gemma3,gpt_oss,llama4,mistral}.py, 0.26/0.32).
"""

from __future__ import annotations

from dataclasses import dataclass

from model_store.families.config import ConfigView
from model_store.families.facts import KvLayers

# Attention projections with a bias on q, k and v (HF modeling code, 2026-11).
_QKV_BIAS = {"qwen2", "qwen2_moe", "qwen2_vl", "qwen2_5_vl"}
# Per-head RMSNorm on q and k.
_QK_NORM = {"qwen3", "qwen3_moe", "gemma3", "gemma3_text", "olmo2", "olmo3", "exaone4"}
# Four norms per layer (pre/post attention and feed-forward) instead of two.
_SANDWICH_NORMS = {"gemma2", "gemma3", "gemma3_text"}
# Model types whose `sliding_window`, when set, applies to every layer (vLLM's mistral.py,
# mixtral.py; Mistral-7B-v0.1 uses 4096).
_SLIDING_ALL_LAYERS = {"mistral", "mixtral", "ministral3"}
# Model types whose config carries a `sliding_window` their layers do not use unless
# `use_sliding_window` is true.
_SLIDING_OPT_IN = {"qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "qwen2_vl", "qwen2_5_vl"}


@dataclass(frozen=True)
class GqaAttention:
    hidden_size: int
    heads: int
    kv_heads: int
    head_dim: int
    bias: bool
    qk_norm: bool
    norms_per_layer: int

    def parameters_per_layer(self) -> int:
        q_out, kv_out = self.heads * self.head_dim, self.kv_heads * self.head_dim
        weights = self.hidden_size * (q_out + 2 * kv_out) + q_out * self.hidden_size
        bias = (q_out + 2 * kv_out) if self.bias else 0
        return weights + bias + (2 * self.head_dim if self.qk_norm else 0)

    def norm_parameters_per_layer(self) -> int:
        return self.norms_per_layer * self.hidden_size

    def lora_shapes(self) -> list[tuple[str, int, int]]:
        q_out, kv_out = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return [
            ("q_proj", self.hidden_size, q_out),
            ("k_proj", self.hidden_size, kv_out),
            ("v_proj", self.hidden_size, kv_out),
            ("o_proj", q_out, self.hidden_size),
        ]


def read_gqa(text: ConfigView, model_type: str) -> GqaAttention:
    hidden = text.int("hidden_size")
    heads = text.int("num_attention_heads")
    kv_heads = text.int("num_key_value_heads", heads)
    if heads % kv_heads:
        raise text.error(
            "num_key_value_heads", f"({kv_heads}) must divide num_attention_heads ({heads}) for grouped-query attention"
        )
    head_dim = text.int("head_dim", 0, minimum=0) or hidden // heads  # an explicit head_dim wins
    if head_dim == 0:
        raise text.error("num_attention_heads", f"({heads}) exceeds hidden_size ({hidden})")
    return GqaAttention(
        hidden_size=hidden,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        bias=model_type in _QKV_BIAS or text.bool("attention_bias"),
        qk_norm=model_type in _QK_NORM,
        norms_per_layer=4 if model_type in _SANDWICH_NORMS else 2,
    )


def layer_kinds(text: ConfigView, model_type: str, num_layers: int) -> list[tuple[str, int | None]]:
    """(kind, window) for each decoder layer, from the config keys that set it."""
    window = text.raw("sliding_window")
    layer_types = text.str_list("layer_types")
    if layer_types is not None:
        if len(layer_types) != num_layers:
            raise text.error("layer_types", f"has {len(layer_types)} entries for {num_layers} layers")
        kinds = []
        for entry in layer_types:
            if entry == "full_attention":
                kinds.append(("full", None))
            elif entry == "sliding_attention":
                kinds.append(("sliding", text.int("sliding_window")))
            elif entry == "chunked_attention":
                kinds.append(("chunked", text.int("attention_chunk_size")))
            else:
                raise text.error("layer_types", f"entry {entry!r} is not modelled (full_attention, sliding_attention, chunked_attention are)")
        return kinds
    if model_type == "gemma2":
        size = text.int("sliding_window")
        return [("sliding", size) if i % 2 == 0 else ("full", None) for i in range(num_layers)]
    if model_type in ("gemma3", "gemma3_text"):
        size, pattern = text.int("sliding_window"), text.int("sliding_window_pattern", 6)
        return [("sliding", size) if (i + 1) % pattern else ("full", None) for i in range(num_layers)]
    if model_type in ("llama4", "llama4_text") and text.has("attention_chunk_size"):
        chunk = text.int("attention_chunk_size")
        no_rope = text.int_list("no_rope_layers") or [int((i + 1) % 4 != 0) for i in range(num_layers)]
        if len(no_rope) != num_layers:
            raise text.error("no_rope_layers", f"has {len(no_rope)} entries for {num_layers} layers")
        # Layers that use RoPE attend within their chunk; the NoPE layers see everything.
        return [("chunked", chunk) if no_rope[i] else ("full", None) for i in range(num_layers)]
    if window is not None:
        if model_type in _SLIDING_OPT_IN:
            if text.bool("use_sliding_window"):
                raise text.error("use_sliding_window", "true is not modelled (Qwen's per-layer sliding window)")
        elif model_type in _SLIDING_ALL_LAYERS:
            return [("sliding", text.int("sliding_window"))] * num_layers
        else:
            raise text.error("sliding_window", f"is set ({window!r}) for model_type {model_type!r}, whose layer layout is not modelled")
    return [("full", None)] * num_layers


def kv_layers(kinds: list[tuple[str, int | None]], kv_heads: int, head_dim: int) -> tuple[KvLayers, ...]:
    """Count the layers of each (kind, window), in a stable order (full first)."""
    counts: dict[tuple[str, int | None], int] = {}
    for kind in kinds:
        counts[kind] = counts.get(kind, 0) + 1
    order = sorted(counts, key=lambda k: (k[0] != "full", k[0], k[1] or 0))
    return tuple(KvLayers(kind, counts[k], kv_heads, head_dim, window) for k in order for kind, window in [k])
