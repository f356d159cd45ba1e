"""How many tokens and requests a KV-cache byte budget holds, as vLLM's allocator counts them.

Mirrors vLLM's v1 KV cache manager (vllm/v1/core/kv_cache_utils.py and
vllm/v1/kv_cache_interface.py; identical in 0.26 and 0.32 for these paths, read 2026-12):

- layers with the same spec form groups of `group_size` layers (hybrid models: the size
  of the rarest kind, or the largest when kinds are within 1.5x; the last group of a kind
  is padded);
- `num_blocks = budget // page_size // group_size`, where a page is `block_size` tokens of
  one layer;
- a request may need at most: full attention `cdiv(max_model_len, block_size)` blocks,
  sliding window `cdiv(min(window - 1 + in_flight, max_model_len), block_size) + 1`,
  chunked local `cdiv(min(chunk + in_flight, max_model_len), block_size)`, per group,
  where `in_flight` is the tokens of the batches scheduled at once (async scheduling: 2);
- `max_concurrency = num_blocks / blocks_per_request` and the logged "GPU KV cache size"
  is `int(max_concurrency * max_model_len)` tokens.

State layers (gated delta net, Mamba-2; vllm/platforms/interface.py
update_block_size_for_backend, vllm/model_executor/models/config.py MambaModelConfig and
MambaSpec in kv_cache_interface.py, read in the vLLM 0.26.0 wheel and held to its figures by
the GPU measurements of examples/gpu/families):
one page holds one sequence's state, so vLLM grows the attention block until an attention
page is at least a state page and pads the state page to it ("Padding mamba page size by
x% ..."). With prefix caching (the plan's default) the cache mode depends on the model:
Mamba-2 models cache "all" states, one per block of context, in blocks that are a multiple
of the kernel's chunk size; gated-delta-net models cache in "align" mode, the running state
and the last aligned one (two blocks per sequence), in the smallest block of the backend's
alignment whose page holds one state. DeepSeek sparse attention caches its indexer's
keys beside the MLA latent in 64-token blocks; vLLM keeps both in one group (their pages
differ in size, not in kind: UniformTypeKVCacheSpecs).

Attention layers of different kinds and page sizes (Gemma-4: sliding layers of 16 KV heads x
256, full layers of 4 x 512; vLLM 0.26.0 unify_kv_cache_spec_page_size): every page is made
the largest one by giving a smaller layer more tokens per block, the ratio of the pages; a
page that does not divide the largest is padded only on backends that read pages by their
stride, which the planner does not count on: such a model is refused (PagesNotUnifiable).

Pure: no vLLM import. The GPU measurements in tests/data/gpu_measurements.json hold it to
vLLM's own figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmfleet.model_store.errors import LlmfleetError
from llmfleet.model_store.facts.families import KvLayers

# The vLLM release whose allocator these rules mirror: 0.26.0's kv_cache_utils.py and
# kv_cache_interface.py, read in its wheel and held to its figures on a GPU
# (tests/data/gpu_measurements.json). 0.32.0, the container's, and 0.33.0 (the same code, moved to
# kv_cache_planning.py) were read for the same functions: they differ only where attention pages
# differ in size (docs/planner.md, "KV capacity").
MIRRORED_VLLM_VERSIONS = ("0.26.0",)
# CacheConfig.block_size on CUDA: FlashAttention, FlashInfer and FlashAttention-MLA (bf16 KV).
BLOCK_SIZE = 16
# An fp8 MLA cache runs on FlashMLA, which takes 64-token blocks (vllm/v1/attention/backends/mla).
FP8_MLA_BLOCK_SIZE = 64
# FlashMLA's sparse kernels (DeepSeek sparse attention) take 64-token blocks, bf16 or fp8.
SPARSE_MLA_BLOCK_SIZE = 64
# Mamba cache "align" mode: the running state and the last block-aligned one
# (MambaSpec.max_memory_usage_bytes: 2 + speculative blocks).
STATE_BLOCKS_PER_REQUEST = 2
# Async scheduling (vLLM's default) keeps two batches in flight; sliding and chunked layers
# reserve room for both (VllmConfig.max_in_flight_tokens).
IN_FLIGHT_BATCHES = 2


class PagesNotUnifiable(LlmfleetError, ValueError):
    """Attention pages vLLM cannot bring to one size by tokens per block (the planner refuses
    the model with the reason, as vLLM would at start)."""


@dataclass(frozen=True)
class KvCapacity:
    """What a KV budget holds: blocks, blocks one request may need, requests, tokens."""

    block_size: int
    group_size: int
    num_groups: int
    page_bytes: int  # one block of one layer (of every layer, for one group of several sizes)
    num_blocks: int
    blocks_per_request: int
    max_concurrency: float
    tokens: int  # vLLM's "GPU KV cache size: N tokens"


def block_size_for(layers: tuple[KvLayers, ...], element_bytes: int, tp: int = 1, dtype_bytes: int | None = None) -> int:
    """Tokens per block: the backend's, or, beside state layers, the smallest multiple of the
    backend's alignment (of the state kernel's chunk, in "all" mode) whose attention page holds
    one state."""
    attention = [layer for layer in layers if layer.kind != "state"]
    if any(layer.indexer_bytes for layer in attention):
        alignment = SPARSE_MLA_BLOCK_SIZE
    elif any(layer.kind == "mla" for layer in attention) and element_bytes == 1:
        alignment = FP8_MLA_BLOCK_SIZE
    else:
        alignment = BLOCK_SIZE
    states = [layer.state for layer in layers if layer.kind == "state"]
    if not states:
        return alignment
    state_page = max(state.bytes(tp, dtype_bytes or element_bytes) for state in states)
    token_page = max(layer.bytes_per_token(tp, element_bytes) for layer in attention)
    if any(state.prefix_cache_mode == "all" for state in states):
        alignment = math.lcm(max(state.chunk_size for state in states), alignment)
    return alignment * math.ceil(math.ceil(state_page / token_page) / alignment)


def kv_bytes_per_token(layers: tuple[KvLayers, ...], element_bytes: int, tp: int = 1) -> int:
    """Bytes one token takes in every layer's cache on one GPU (what a full-attention model
    needs per token of context; state layers need none)."""
    return sum(layer.count * layer.bytes_per_token(tp, element_bytes) for layer in layers)


def state_bytes_per_sequence(layers: tuple[KvLayers, ...], dtype_bytes: int, tp: int = 1) -> int:
    """Bytes one sequence's recurrent state takes in every state layer on one GPU, unpadded."""
    return sum(layer.count * layer.state_bytes(tp, dtype_bytes) for layer in layers)


def uniform_type(layers: tuple[KvLayers, ...]) -> bool:
    """Full-attention layers of different sizes (per-layer KV heads): vLLM keeps them in one
    group whose page is the sum of theirs (UniformTypeKVCacheSpecs, vLLM source read 2026-12)."""
    return len(layers) > 1 and all(layer.kind == "full" for layer in layers)


def kv_groups(layers: tuple[KvLayers, ...], hybrid: bool = True) -> tuple[int, list[KvLayers]]:
    """(group_size, one spec per group) as vLLM groups the layers.

    Without the hybrid manager (`hybrid=False`), a model with full-attention layers caches
    its sliding and chunked layers like full ones (vllm unify_hybrid_kv_cache_specs); a
    model of sliding layers only is uniform and stays as it is.
    """
    if not hybrid and any(layer.kind == "full" for layer in layers):
        layers = (KvLayers("full", sum(layer.count for layer in layers), layers[0].kv_heads, layers[0].head_size),)
    if len(layers) == 1:
        return layers[0].count, [layers[0]]
    if uniform_type(layers):
        return 1, [layers[0]]
    smallest, largest = min(layer.count for layer in layers), max(layer.count for layer in layers)
    group_size = largest if largest < smallest * 1.5 else smallest
    groups = [layer for layer in layers for _ in range(math.ceil(layer.count / group_size))]
    return group_size, groups


def tokens_per_block(layer: KvLayers, page_bytes: int, block_size: int, tp: int, element_bytes: int) -> int:
    """A layer's tokens per block once every page is `page_bytes`: state layers and layers of the
    largest page keep `block_size`; a smaller attention page takes the ratio's multiple."""
    per_token = layer.bytes_per_token(tp, element_bytes)
    if layer.kind == "state" or per_token * block_size == page_bytes:
        return block_size
    if page_bytes % (per_token * block_size):
        raise PagesNotUnifiable(
            f"{layer.count} {layer.kind} layers cache {per_token * block_size:,} bytes a block, which does not divide "
            f"the largest page ({page_bytes:,} bytes): vLLM cannot give them one page size"
        )
    return page_bytes // per_token


def _blocks_needed(layer: KvLayers, block_size: int, max_model_len: int, in_flight: int) -> int:
    if layer.kind == "sliding":
        return math.ceil(min(layer.window - 1 + in_flight, max_model_len) / block_size) + 1
    if layer.kind == "chunked":
        return math.ceil(min(layer.window + in_flight, max_model_len) / block_size)
    if layer.kind == "state" and layer.state.prefix_cache_mode == "align":
        return STATE_BLOCKS_PER_REQUEST
    return math.ceil(max_model_len / block_size)


def kv_capacity(
    layers: tuple[KvLayers, ...],
    budget_bytes: int,
    *,
    element_bytes: int,
    tp: int,
    max_model_len: int,
    max_num_batched_tokens: int,
    hybrid: bool = True,
    dtype_bytes: int | None = None,
) -> KvCapacity:
    """The blocks, requests and tokens `budget_bytes` of KV cache hold on one GPU
    (`dtype_bytes`: the model dtype's, in which state layers keep their state)."""
    block_size = block_size_for(layers, element_bytes, tp, dtype_bytes)
    group_size, groups = kv_groups(layers, hybrid)
    # State pages are padded to attention pages and smaller attention pages hold more tokens,
    # so pages are uniform; layers of one kind at different sizes share one page, the sum of theirs.
    if uniform_type(layers):
        page_bytes = block_size * kv_bytes_per_token(layers, element_bytes, tp)
    else:
        page_bytes = block_size * max(layer.bytes_per_token(tp, element_bytes) for layer in layers)
    num_blocks = max(0, budget_bytes) // page_bytes // group_size
    in_flight = IN_FLIGHT_BATCHES * max_num_batched_tokens
    per_request = 0
    for g in groups:
        tokens = block_size if uniform_type(layers) else tokens_per_block(g, page_bytes, block_size, tp, element_bytes)
        per_request += _blocks_needed(g, tokens, max_model_len, in_flight)
    concurrency = num_blocks / per_request
    return KvCapacity(
        block_size=block_size,
        group_size=group_size,
        num_groups=len(groups),
        page_bytes=page_bytes,
        num_blocks=num_blocks,
        blocks_per_request=per_request,
        max_concurrency=concurrency,
        tokens=int(concurrency * max_model_len),
    )
