"""Per-layer heterogeneous decoders: Llama-Nemotron's `block_configs` (model_type
`nemotron-nas`, found by neural architecture search), where each layer keeps, drops or
linearises its attention and its MLP, with its own KV-head count and MLP width.

Mirrors vLLM's nemotron_nas.py (DeciLMForCausalLM, vLLM source read 2026-12): attention with
`num_attention_heads // n_heads_in_group` KV heads, no layer at all for `no_op`, one hidden x
hidden linear for `replace_with_linear`; the MLP width is `_ffn_mult_to_intermediate_size`;
a layer's input norm exists only with its attention, its post-attention norm only with its MLP.
vLLM caches layers of different KV-head counts in one group whose page is the sum of theirs
(UniformTypeKVCacheSpecs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmfleet.model_store.facts.families.config import ConfigView

# vLLM's _ffn_mult_to_intermediate_size rounds the MLP width up to a multiple of 256.
FFN_WIDTH_MULTIPLE = 256


@dataclass(frozen=True)
class Block:
    """One layer: its KV heads (0: no attention), whether its attention or MLP is one linear,
    and its MLP width (0: no MLP)."""

    kv_heads: int
    attention_linear: bool
    mlp_width: int
    mlp_linear: bool


def ffn_width(ffn_mult: float, hidden: int) -> int:
    return math.ceil(int(2 * ffn_mult * hidden / 3) / FFN_WIDTH_MULTIPLE) * FFN_WIDTH_MULTIPLE


def read_blocks(text: ConfigView, num_layers: int) -> list[Block]:
    raw = text.raw("block_configs")
    if not isinstance(raw, list) or len(raw) != num_layers:
        raise text.error("block_configs", f"must be a list of {num_layers} layer configs, got {type(raw).__name__}")
    heads, hidden = text.int("num_attention_heads"), text.int("hidden_size")
    blocks = []
    for i, entry in enumerate(raw):
        layer = ConfigView(entry if isinstance(entry, dict) else {}, text.where, f"{text.prefix}block_configs[{i}].")
        attention = layer.child("attention") or ConfigView({}, layer.where, f"{layer.prefix}attention.")
        ffn = layer.child("ffn") or ConfigView({}, layer.where, f"{layer.prefix}ffn.")
        for part in (attention, ffn):
            for key in ("sparsify", "num_sink_tokens", "window_length"):
                if part.has(key):
                    raise part.error(key, f"is set ({part.raw(key)!r}): sparse, sink and windowed blocks are not modelled")
        attends = not attention.bool("no_op") and not attention.bool("replace_with_linear")
        kv_heads = heads // attention.int("n_heads_in_group") if attends else 0
        feeds = not ffn.bool("no_op") and not ffn.bool("replace_with_linear")
        mult = ffn.raw("ffn_mult")
        if feeds and not isinstance(mult, (int, float)):
            raise ffn.error("ffn_mult", f"must be a number, got {mult!r}")
        blocks.append(Block(kv_heads, attention.bool("replace_with_linear"), ffn_width(mult, hidden) if feeds else 0, ffn.bool("replace_with_linear")))
    return blocks
