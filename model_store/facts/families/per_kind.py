"""Attention whose shape depends on the layer's kind (Gemma-4): sliding layers attend with
`num_key_value_heads` x `head_dim`, full layers with `global_head_dim` and, where their K
also serves as V (`attention_k_eq_v`), `num_global_key_value_heads`; the last
`num_kv_shared_layers` layers read an earlier layer's cache of their kind and keep none.

Mirrors vLLM 0.26's gemma4.py (Gemma4DecoderLayer, Gemma4Attention, read in the 0.26.0 wheel):
the qkv projection of a K=V layer keeps its V slot, filled from K's weights at load, so vLLM
holds V weights the checkpoint does not store; a KV-shared layer has no cache of its own
(`kv_sharing_target_layer_name`). Pages of different sizes are the allocator's concern
(kv_cache.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from llmfleet.model_store.facts.families.attention import GqaAttention, LayerKinds
from llmfleet.model_store.facts.families.config import ConfigView


@dataclass(frozen=True)
class KindAttention:
    """The layers of one (kind, window): their attention's shape and how many keep a cache."""

    kind: str
    window: int | None
    layers: int
    cached: int  # layers with a cache of their own (the others share one)
    attention: GqaAttention
    k_eq_v: bool  # V read from K: no v_proj in the checkpoint

    def parameters(self) -> int:
        """What vLLM holds for these layers' attention (a K=V layer's V slot included)."""
        return self.layers * self.attention.parameters_per_layer()

    def not_stored(self) -> int:
        """The V projections vLLM fills from K: in memory, not in the checkpoint."""
        a = self.attention
        return self.layers * a.hidden_size * a.kv_heads * a.head_dim if self.k_eq_v else 0


def read_per_kind(text: ConfigView, gqa: GqaAttention, kinds: LayerKinds) -> list[KindAttention]:
    """Each (kind, window)'s attention shape, in the order of first appearance; `gqa` is the
    sliding layers' shape as read from the config's top-level keys."""
    num_layers = len(kinds)
    if text.int("hidden_size_per_layer_input", 0, minimum=0):
        problem = "is set: per-layer input embeddings (Gemma-4 E2B, E4B) are not modelled"
        raise text.error("hidden_size_per_layer_input", problem)
    shared_from = num_layers - text.int("num_kv_shared_layers", 0, minimum=0)
    if shared_from < 1:
        raise text.error("num_kv_shared_layers", f"leaves no layer with a cache of its own among {num_layers}")
    k_eq_v = text.bool("attention_k_eq_v")
    full = replace(
        gqa,
        head_dim=text.int("global_head_dim", gqa.head_dim),
        kv_heads=text.int("num_global_key_value_heads", gqa.kv_heads) if k_eq_v else gqa.kv_heads,
    )
    if full.heads % full.kv_heads:
        raise text.error("num_global_key_value_heads", f"({full.kv_heads}) must divide num_attention_heads ({full.heads})")
    groups: dict[tuple[str, int | None], list[int]] = {}
    for i, kind in enumerate(kinds):
        groups.setdefault(kind, []).append(i)
    return [
        KindAttention(
            kind=kind,
            window=window,
            layers=len(indices),
            cached=sum(i < shared_from for i in indices),
            attention=full if kind == "full" else gqa,
            k_eq_v=k_eq_v and kind == "full",
        )
        for (kind, window), indices in groups.items()
    ]
