"""Grouped-query attention: parameters, LoRA shapes and the per-layer layout of its KV cache.

The layout says which layers see the whole context (full), only the last `window` tokens
(sliding) or only their own `chunk` (chunked local, Llama-4), as vLLM's model files assign
them (vllm/model_executor/models/{gemma2,gemma3,gpt_oss,llama4,mistral}.py, 0.26/0.32).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from llmfleet.model_store.facts.families.config import ConfigView
from llmfleet.model_store.facts.families.facts import KvLayers
from llmfleet.model_store.facts.families.registry import Layout, TextParts
from llmfleet.model_store.facts.families.state import StateShape

@dataclass(frozen=True)
class GqaAttention:
    hidden_size: int
    heads: int
    kv_heads: int
    head_dim: int
    bias: bool
    qk_norm: bool
    norms_per_layer: int
    output_gate: bool = False  # q_proj also yields a sigmoid gate per output element

    @property
    def q_proj_out(self) -> int:
        return self.heads * self.head_dim * (2 if self.output_gate else 1)

    def parameters_per_layer(self) -> int:
        q_out, kv_out = self.heads * self.head_dim, self.kv_heads * self.head_dim
        weights = self.hidden_size * (self.q_proj_out + 2 * kv_out) + q_out * self.hidden_size
        bias = (q_out + 2 * kv_out) if self.bias else 0
        return weights + bias + (2 * self.head_dim if self.qk_norm else 0)

    def norm_parameters_per_layer(self) -> int:
        return self.norms_per_layer * self.hidden_size

    def lora_shapes(self) -> list[tuple[str, int, int]]:
        q_out, kv_out = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return [
            ("q_proj", self.hidden_size, self.q_proj_out),
            ("k_proj", self.hidden_size, kv_out),
            ("v_proj", self.hidden_size, kv_out),
            ("o_proj", q_out, self.hidden_size),
        ]


def read_gqa(text: ConfigView, parts: TextParts) -> GqaAttention:
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
        bias=parts.qkv_bias or text.bool("attention_bias"),
        qk_norm=parts.qk_norm,
        norms_per_layer=parts.norms_per_layer,
        output_gate=text.bool("attn_output_gate", parts.output_gate),
    )


LayerKinds = list[tuple[str, int | None]]


def _full(text: ConfigView, model_type: str, num_layers: int) -> LayerKinds:
    window = text.raw("sliding_window")
    if window is not None:
        raise text.error("sliding_window", f"is set ({window!r}) for model_type {model_type!r}, whose layer layout is not modelled")
    return [("full", None)] * num_layers


def _sliding_all(text: ConfigView, model_type: str, num_layers: int) -> LayerKinds:
    """`sliding_window`, when set, applies to every layer (vLLM's mistral.py, mixtral.py;
    Mistral-7B-v0.1 uses 4096)."""
    if text.raw("sliding_window") is None:
        return [("full", None)] * num_layers
    return [("sliding", text.int("sliding_window"))] * num_layers


def _sliding_opt_in(text: ConfigView, model_type: str, num_layers: int) -> LayerKinds:
    """Qwen's configs carry a `sliding_window` their layers do not use unless
    `use_sliding_window` is true."""
    if text.raw("sliding_window") is not None and text.bool("use_sliding_window"):
        raise text.error("use_sliding_window", "true is not modelled (Qwen's per-layer sliding window)")
    return [("full", None)] * num_layers


def _gemma2(text: ConfigView, model_type: str, num_layers: int) -> LayerKinds:
    size = text.int("sliding_window")
    return [("sliding", size) if i % 2 == 0 else ("full", None) for i in range(num_layers)]


def _gemma3(text: ConfigView, model_type: str, num_layers: int) -> LayerKinds:
    size, pattern = text.int("sliding_window"), text.int("sliding_window_pattern", 6)
    return [("sliding", size) if (i + 1) % pattern else ("full", None) for i in range(num_layers)]


def _llama4_chunked(text: ConfigView, model_type: str, num_layers: int) -> LayerKinds:
    if not text.has("attention_chunk_size"):
        return _full(text, model_type, num_layers)
    chunk = text.int("attention_chunk_size")
    no_rope = text.int_list("no_rope_layers") or [int((i + 1) % 4 != 0) for i in range(num_layers)]
    if len(no_rope) != num_layers:
        raise text.error("no_rope_layers", f"has {len(no_rope)} entries for {num_layers} layers")
    # Layers that use RoPE attend within their chunk; the NoPE layers see everything.
    return [("chunked", chunk) if no_rope[i] else ("full", None) for i in range(num_layers)]


def _interval(text: ConfigView, model_type: str, num_layers: int) -> LayerKinds:
    """Qwen3-Next: every `full_attention_interval`-th layer attends, the others are state layers."""
    every = text.int("full_attention_interval")
    return [("full", None) if (i + 1) % every == 0 else ("state", None) for i in range(num_layers)]


def _parallel_hybrid(text: ConfigView, model_type: str, num_layers: int) -> LayerKinds:
    """Falcon-H1: every layer runs attention and a Mamba-2 mixer side by side, so each holds
    a KV cache and a state (vLLM falcon_h1.py FalconH1ParallelHybrid): two entries a layer."""
    return _full(text, model_type, num_layers) + [("state", None)] * num_layers


# Nemotron-H's one-letter block types: a Mamba-2 layer, an attention layer, or a layer that
# is only an MLP (dense or MoE).
_BLOCKS = {"M": "mamba", "*": "attention", "-": "mlp", "E": "moe"}
BLOCK_MIXERS = {"mamba": ("state", None), "attention": ("full", None), "mlp": (None, None), "moe": (None, None)}


def block_types(text: ConfigView, num_layers: int) -> list[str]:
    """Each layer's block type, from `layers_block_type` or `hybrid_override_pattern`."""
    names = text.str_list("layers_block_type")
    key = "layers_block_type"
    if names is None:
        key, pattern = "hybrid_override_pattern", text.raw("hybrid_override_pattern")
        if not isinstance(pattern, str) or set(pattern) - set(_BLOCKS):
            raise text.error(key, f"must be a string of {''.join(_BLOCKS)}, got {pattern!r}")
        names = [_BLOCKS[c] for c in pattern]
    if len(names) != num_layers:
        raise text.error(key, f"has {len(names)} entries for {num_layers} layers")
    unknown = sorted(set(names) - set(BLOCK_MIXERS))
    if unknown:
        raise text.error(key, f"entry {unknown[0]!r} is not modelled ({', '.join(BLOCK_MIXERS)} are)")
    return names


def _block_pattern(text: ConfigView, model_type: str, num_layers: int) -> LayerKinds:
    return [BLOCK_MIXERS[name] for name in block_types(text, num_layers)]


# A row's `layout` -> how its layers' attention kinds are read when `layer_types` is absent.
LAYOUTS: dict[Layout, Callable[[ConfigView, str, int], LayerKinds]] = {
    "full": _full,
    "sliding_all": _sliding_all,
    "sliding_opt_in": _sliding_opt_in,
    "gemma2": _gemma2,
    "gemma3": _gemma3,
    "llama4_chunked": _llama4_chunked,
    "interval": _interval,
    "block_pattern": _block_pattern,
    "parallel_hybrid": _parallel_hybrid,
}
# `layer_types` entries -> (kind, the key that holds its window).
LAYER_TYPES = {
    "full_attention": ("full", None),
    "sliding_attention": ("sliding", "sliding_window"),
    "chunked_attention": ("chunked", "attention_chunk_size"),
    "linear_attention": ("state", None),  # Qwen3-Next, Qwen3.5: gated delta net
    "mamba": ("state", None),  # Granite-4.0-H
    "attention": ("full", None),
}


def layer_kinds(text: ConfigView, model_type: str, parts: TextParts, num_layers: int) -> LayerKinds:
    """(kind, window) for each decoder layer's token mixer (kind None: an MLP-only layer; a
    parallel hybrid's layers have two): an explicit `layer_types` list, else the row's layout.
    State layers need a row with a state part."""
    layer_types = text.str_list("layer_types")
    if layer_types is None:
        return LAYOUTS[parts.layout](text, model_type, num_layers)
    if parts.layout == "parallel_hybrid":
        raise text.error(
            "layer_types",
            f"is set for model_type {model_type!r}, whose layers each run attention and a state mixer; "
            "one kind a layer is not modelled",
        )
    if len(layer_types) != num_layers:
        raise text.error("layer_types", f"has {len(layer_types)} entries for {num_layers} layers")
    modelled = [name for name, (kind, _) in LAYER_TYPES.items() if kind != "state" or parts.state]
    kinds = []
    for entry in layer_types:
        if entry not in modelled:
            raise text.error("layer_types", f"entry {entry!r} is not modelled for model_type {model_type!r} ({', '.join(modelled)} are)")
        kind, window_key = LAYER_TYPES[entry]
        kinds.append((kind, text.int(window_key) if window_key else None))
    return kinds


def kv_layers(kinds: LayerKinds, kv_heads: int, head_dim: int, state: StateShape | None = None) -> tuple[KvLayers, ...]:
    """Count the layers of each (kind, window), in a stable order (full first); state layers
    carry their state's shape, MLP-only layers cache nothing."""
    counts: dict[tuple[str, int | None], int] = {}
    for kind in kinds:
        if kind[0] is not None:
            counts[kind] = counts.get(kind, 0) + 1
    order = sorted(counts, key=lambda k: (k[0] != "full", k[0], k[1] or 0))
    return tuple(
        KvLayers("state", counts[k], 0, 0, state=state) if kind == "state" else KvLayers(kind, counts[k], kv_heads, head_dim, window)
        for k in order
        for kind, window in [k]
    )
