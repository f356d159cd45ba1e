"""Multi-head latent attention (DeepSeek-V2/V3/R1, Kimi-K2).

vLLM caches one compressed latent per token and layer: kv_lora_rank + qk_rope_head_dim
elements (576 for DeepSeek-V3), shared by every head and held whole on every
tensor-parallel rank (vllm/v1/kv_cache_interface.py MLAAttentionSpec; no per-head K/V).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmfleet.model_store.facts.families.config import ConfigView


@dataclass(frozen=True)
class MlaAttention:
    hidden_size: int
    heads: int
    q_lora_rank: int  # 0: q is one projection (DeepSeek-V2-Lite)
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int

    @property
    def latent_size(self) -> int:
        return self.kv_lora_rank + self.qk_rope_head_dim

    def _linears(self) -> list[tuple[str, int, int]]:
        qk_head = self.qk_nope_head_dim + self.qk_rope_head_dim
        q = (
            [("q_a_proj", self.hidden_size, self.q_lora_rank), ("q_b_proj", self.q_lora_rank, self.heads * qk_head)]
            if self.q_lora_rank
            else [("q_proj", self.hidden_size, self.heads * qk_head)]
        )
        return [
            *q,
            ("kv_a_proj_with_mqa", self.hidden_size, self.latent_size),
            ("kv_b_proj", self.kv_lora_rank, self.heads * (self.qk_nope_head_dim + self.v_head_dim)),
            ("o_proj", self.heads * self.v_head_dim, self.hidden_size),
        ]

    def parameters_per_layer(self) -> int:
        latent_norms = self.kv_lora_rank + self.q_lora_rank  # kv_a_layernorm, q_a_layernorm
        return sum(i * o for _, i, o in self._linears()) + latent_norms

    def norm_parameters_per_layer(self) -> int:
        return 2 * self.hidden_size

    def lora_shapes(self) -> list[tuple[str, int, int]]:
        return self._linears()


def read_mla(text: ConfigView) -> MlaAttention:
    return MlaAttention(
        hidden_size=text.int("hidden_size"),
        heads=text.int("num_attention_heads"),
        q_lora_rank=text.int("q_lora_rank", 0, minimum=0),
        kv_lora_rank=text.int("kv_lora_rank"),
        qk_nope_head_dim=text.int("qk_nope_head_dim"),
        qk_rope_head_dim=text.int("qk_rope_head_dim"),
        v_head_dim=text.int("v_head_dim"),
    )


# The indexer's keys are cached in fp8 with one fp32 scale per 128 elements
# (vllm/model_executor/models/deepseek_v2.py Indexer: quant_block_size 128; vLLM source read 2026-12).
INDEXER_QUANT_BLOCK = 128
# FlashMLA's sparse kernels hold the latent as 512 + 64 elements (the fp8_ds_mla layout).
SPARSE_LATENT = (512, 64)


@dataclass(frozen=True)
class Indexer:
    """DeepSeek sparse attention's lightning indexer (DeepSeek-V3.2, GLM-5): per layer a
    query up-projection from the q latent, one key head, per-head weights and a key norm; it
    caches one fp8 key and its scales per token beside the MLA latent."""

    parameters: int
    cache_bytes: int  # per token and layer


def read_indexer(text: ConfigView, mla: MlaAttention) -> Indexer:
    for key in ("index_topk_freq", "indexer_types", "index_topk_pattern"):
        if text.has(key):
            raise text.error(key, "is set: indexers shared between layers are not modelled")
    if (mla.kv_lora_rank, mla.qk_rope_head_dim) != SPARSE_LATENT:
        raise text.error("kv_lora_rank", f"must be {SPARSE_LATENT[0]} with qk_rope_head_dim {SPARSE_LATENT[1]} for sparse attention's cache layout")
    heads, head_dim = text.int("index_n_heads"), text.int("index_head_dim")
    q_in = mla.q_lora_rank or mla.hidden_size
    parameters = q_in * heads * head_dim + mla.hidden_size * (head_dim + heads) + 2 * head_dim
    return Indexer(parameters, head_dim + head_dim // INDEXER_QUANT_BLOCK * 4)


# MLACommonMetadataBuilder.determine_chunked_prefill_workspace_size (vLLM 0.26/0.32): room for
# 8 full-length requests or 4 pages per sequence, at most 64 Ki tokens.
MAX_PREFILL_WORKSPACE_TOKENS = 64 * 1024


def prefill_workspace_tokens(max_model_len: int, max_num_seqs: int, block_size: int) -> int:
    """Tokens of cached context MLA up-projects at once when a prefill reads earlier chunks."""
    size = min(max(8 * max_model_len, 4 * max_num_seqs * block_size), MAX_PREFILL_WORKSPACE_TOKENS)
    return max(size, max_num_seqs * block_size)


def prefill_workspace_bytes(shape, max_model_len: int, max_num_seqs: int, block_size: int, heads_per_gpu: int) -> int:
    """The up-projected context vLLM's profile run allocates in every MLA layer (to reserve it):
    workspace tokens x heads x (qk_nope + v) x 2 bytes. DeepSeek-V3 at 16k context: 4 GiB."""
    tokens = prefill_workspace_tokens(max_model_len, max_num_seqs, block_size)
    return tokens * heads_per_gpu * (shape.qk_nope_head_dim + shape.v_head_dim) * 2
