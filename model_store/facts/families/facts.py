"""What the planner knows of a model: layer layout, parameter counts, checkpoint format."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from llmfleet.model_store.facts.families.quantization import WeightFormat
from llmfleet.model_store.facts.families.state import StateShape

AttentionKind = Literal["full", "sliding", "chunked", "mla", "state"]
# DeepSeek sparse attention's fp8 MLA cache (`fp8_ds_mla`): a 512-element fp8 latent, four
# fp32 scales and the 64-element rope part in bf16 per token (vLLM MLAAttentionSpec, source read 2026-12).
FP8_DS_MLA_BYTES = 512 + 4 * 4 + 64 * 2


@dataclass(frozen=True)
class KvLayers:
    """`count` decoder layers that cache the same thing per token.

    Grouped-query attention caches K and V for each KV head (`kv_heads` x `head_size`,
    split across tensor-parallel ranks); MLA caches one latent of `head_size` elements
    (kv_lora_rank + qk_rope_head_dim) that every rank holds whole, plus, with DeepSeek sparse
    attention, its indexer's keys; a state layer (gated delta net, Mamba-2) caches nothing per
    token and one `state` per sequence.
    """

    kind: AttentionKind
    count: int
    kv_heads: int
    head_size: int
    window: int | None = None  # sliding window or attention chunk, in tokens
    state: StateShape | None = None  # kind "state": what one sequence keeps
    indexer_bytes: int = 0  # DeepSeek sparse attention: the indexer's fp8 keys and scales per token

    def elements_per_token(self, tp: int) -> int:
        """Cached elements per token of one layer on one GPU at tensor-parallel size `tp`."""
        if self.kind == "state":
            return 0
        if self.kind == "mla":
            return self.head_size
        # KV heads split across ranks; vLLM replicates them when tp exceeds their number.
        return 2 * max(1, self.kv_heads // tp) * self.head_size

    def bytes_per_token(self, tp: int, element_bytes: int) -> int:
        """Cached bytes per token of one layer on one GPU."""
        if self.indexer_bytes:
            latent = FP8_DS_MLA_BYTES if element_bytes == 1 else self.head_size * element_bytes
            return latent + self.indexer_bytes
        return self.elements_per_token(tp) * element_bytes

    def state_bytes(self, tp: int, dtype_bytes: int) -> int:
        """Bytes one sequence's state takes in one layer on one GPU (0 for attention layers)."""
        return self.state.bytes(tp, dtype_bytes) if self.state else 0


@dataclass(frozen=True)
class ParameterCounts:
    """Parameters by the part of the model they belong to (quantizers treat parts differently)."""

    embeddings: int
    lm_head: int  # 0 when tied to the embeddings
    attention: int
    dense_mlp: int
    experts: int  # routed experts of MoE layers
    shared_experts: int
    router: int
    norms: int
    vision: int = 0  # vision encoder and projector of a multimodal checkpoint
    not_loaded: int = 0  # in the checkpoint, not loaded for serving (DeepSeek's MTP layer)
    not_stored: int = 0  # held by vLLM, not in the checkpoint (Gemma-4's V projections, filled from K)

    def total(self) -> int:
        """Parameters vLLM holds to serve the model."""
        return sum(getattr(self, f.name) for f in fields(self) if f.name != "not_loaded")

    def checkpoint_total(self) -> int:
        """Parameters in the checkpoint's files."""
        return self.total() + self.not_loaded - self.not_stored

    def part(self, name: str) -> int:
        return getattr(self, name)


@dataclass(frozen=True)
class MoeFacts:
    num_experts: int
    experts_per_token: int
    expert_intermediate_size: int
    moe_layers: int
    shared_intermediate_size: int = 0


@dataclass(frozen=True)
class MlaShape:
    """What MLA's prefill up-projects per head (qk: nope + rope, v)."""

    qk_head_dim: int
    qk_nope_head_dim: int
    v_head_dim: int


@dataclass(frozen=True)
class ArchitectureFacts:
    """The numbers of a causal LM that memory planning and LoRA shape checks need."""

    model_type: str
    family: str  # e.g. "GQA + dense", "MLA + MoE", "GQA + MoE + sliding-window hybrid + vision"
    hidden_size: int
    intermediate_size: int  # dense MLP width (LoRA targets, activations); 0 when every layer is MoE
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool
    max_position_embeddings: int
    checkpoint_dtype: str
    kv_layers: tuple[KvLayers, ...]
    parameters: ParameterCounts
    lora_shapes: tuple[tuple[str, int, int], ...]  # (module, in_features, out_features)
    moe: MoeFacts | None = None
    weight_format: WeightFormat | None = None  # a pre-quantized checkpoint's format
    checkpoint_bytes: int | None = None  # exact bytes of the safetensors, when known
    mla_shape: MlaShape | None = None
    source: str = ""
    inferred: bool = False  # a model type outside the registry, planned from its keys alone

    @property
    def is_moe(self) -> bool:
        return self.moe is not None

    @property
    def checkpoint_quantization(self) -> str | None:
        return self.weight_format.method if self.weight_format else None

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each LoRA-targetable linear module, by short name."""
        return {name: (i, o) for name, i, o in self.lora_shapes}

    def parameter_count(self) -> int:
        return self.parameters.total()

    def transient_elements_per_token(self, tp: int) -> int:
        """The largest temporary tensors one token makes inside one layer, in elements.

        Attention: q, k, v and the output (MLA: heads x (2 x qk head + 2 x v head) after the
        latent is up-projected). MLP: the gate/up output of a dense layer; for MoE, vLLM's
        fused-experts workspace: top-k x (gate/up + activation + down outputs).
        """
        if self.mla_shape:
            m = self.mla_shape
            attention = self.num_attention_heads // tp * (2 * m.qk_head_dim + 2 * m.v_head_dim)
        else:
            attention = (2 * self.num_attention_heads + 2 * self.num_kv_heads) * self.head_dim // tp
        mlp = 2 * self.intermediate_size // tp
        if self.moe:
            m = self.moe
            fused = m.experts_per_token * (3 * m.expert_intermediate_size // tp + self.hidden_size)
            mlp = max(mlp, fused + 2 * m.shared_intermediate_size // tp)
        return max(attention, mlp)
