"""KV capacity as vLLM's allocator counts it (vllm/v1/core/kv_cache_utils.py): groups of
layers, blocks, what one request may hold, and the 'GPU KV cache size' vLLM logs."""

from __future__ import annotations

import math

import pytest

from llmfleet.model_store.facts.families import KvLayers
from llmfleet.model_store.facts.families.state import StateShape
from llmfleet.model_store.planning.kv_cache import (
    BLOCK_SIZE,
    block_size_for,
    FP8_MLA_BLOCK_SIZE,
    IN_FLIGHT_BATCHES,
    kv_bytes_per_token,
    kv_capacity,
    kv_groups,
    SPARSE_MLA_BLOCK_SIZE,
    STATE_BLOCKS_PER_REQUEST,
)

GIB = 2**30


def test_full_attention_is_one_group_of_every_layer() -> None:
    layers = (KvLayers("full", 36, 8, 128),)
    cap = kv_capacity(layers, 10 * GIB, element_bytes=2, tp=1, max_model_len=8192, max_num_batched_tokens=8192)
    page = BLOCK_SIZE * 2 * 8 * 128 * 2
    assert (cap.group_size, cap.num_groups, cap.page_bytes) == (36, 1, page)
    assert cap.num_blocks == 10 * GIB // page // 36
    assert cap.blocks_per_request == 8192 // BLOCK_SIZE
    assert cap.tokens == cap.num_blocks * BLOCK_SIZE  # max_model_len a whole number of blocks


def test_gemma3_27b_grouping_pads_the_sliding_layers() -> None:
    """62 layers, 5 sliding (window 1024) per full one: 52 + 10 -> group size 10, 6 sliding
    groups (the last padded) and 1 full group, as vLLM's own docstring works it."""
    layers = (KvLayers("full", 10, 16, 128), KvLayers("sliding", 52, 16, 128, 1024))
    size, groups = kv_groups(layers)
    assert size == 10 and [g.kind for g in groups] == ["full"] + ["sliding"] * 6


def test_near_equal_kinds_use_the_larger_count() -> None:
    """gpt-oss-20b + an EAGLE drafter layer: 12 sliding + 13 full -> one group of 13 each."""
    size, groups = kv_groups((KvLayers("full", 13, 8, 64), KvLayers("sliding", 12, 8, 64, 128)))
    assert size == 13 and len(groups) == 2


def test_sliding_layers_hold_their_window_plus_the_batches_in_flight() -> None:
    layers = (KvLayers("full", 12, 8, 64), KvLayers("sliding", 12, 8, 64, 128))
    cap = kv_capacity(layers, 100 * GIB, element_bytes=2, tp=1, max_model_len=32768, max_num_batched_tokens=8192)
    in_flight = IN_FLIGHT_BATCHES * 8192
    sliding_blocks = math.ceil(min(128 - 1 + in_flight, 32768) / BLOCK_SIZE) + 1
    assert cap.blocks_per_request == 32768 // BLOCK_SIZE + sliding_blocks
    assert cap.tokens == int(cap.num_blocks / cap.blocks_per_request * 32768)
    dense = kv_capacity(layers, 100 * GIB, element_bytes=2, tp=1, max_model_len=32768, max_num_batched_tokens=8192, hybrid=False)
    assert cap.tokens > 1.3 * dense.tokens  # the hybrid manager's gain at 32k context


def test_a_short_context_gets_nothing_from_the_window() -> None:
    layers = (KvLayers("full", 21, 8, 256), KvLayers("sliding", 21, 8, 256, 4096))
    cap = kv_capacity(layers, 50 * GIB, element_bytes=2, tp=1, max_model_len=8192, max_num_batched_tokens=8192)
    assert cap.blocks_per_request == 2 * (8192 // BLOCK_SIZE) + 1


def test_chunked_local_attention() -> None:
    layers = (KvLayers("full", 12, 8, 128), KvLayers("chunked", 36, 8, 128, 8192))
    cap = kv_capacity(layers, 60 * GIB, element_bytes=2, tp=1, max_model_len=131072, max_num_batched_tokens=8192)
    assert cap.group_size == 12 and cap.num_groups == 4
    chunk_blocks = math.ceil((8192 + 2 * 8192) / BLOCK_SIZE)
    assert cap.blocks_per_request == 131072 // BLOCK_SIZE + 3 * chunk_blocks


def test_mla_latent_is_whole_on_every_rank_and_fp8_uses_64_token_blocks() -> None:
    layers = (KvLayers("mla", 61, 1, 576),)
    bf16 = kv_capacity(layers, 40 * GIB, element_bytes=2, tp=8, max_model_len=16384, max_num_batched_tokens=8192)
    assert bf16.page_bytes == BLOCK_SIZE * 576 * 2 and bf16.block_size == BLOCK_SIZE
    fp8 = kv_capacity(layers, 40 * GIB, element_bytes=1, tp=8, max_model_len=16384, max_num_batched_tokens=8192)
    assert fp8.block_size == FP8_MLA_BLOCK_SIZE and fp8.page_bytes == FP8_MLA_BLOCK_SIZE * 576


def test_kv_heads_split_across_ranks_and_replicate_past_them() -> None:
    layer = KvLayers("full", 1, 8, 128)
    assert [layer.elements_per_token(tp) for tp in (1, 2, 8, 16)] == [2048, 1024, 256, 256]


@pytest.mark.parametrize("budget", [-5, 0])
def test_no_budget_holds_nothing(budget: int) -> None:
    cap = kv_capacity((KvLayers("full", 4, 2, 64),), budget, element_bytes=2, tp=1, max_model_len=1024, max_num_batched_tokens=1024)
    assert cap.num_blocks == 0 and cap.tokens == 0


def test_without_the_hybrid_manager_windows_count_as_full_but_an_all_sliding_model_keeps_them() -> None:
    mixed = (KvLayers("full", 12, 8, 128), KvLayers("chunked", 36, 8, 128, 8192))
    off = kv_capacity(mixed, 60 * GIB, element_bytes=2, tp=1, max_model_len=131072, max_num_batched_tokens=8192, hybrid=False)
    assert (off.group_size, off.num_groups, off.blocks_per_request) == (48, 1, 131072 // BLOCK_SIZE)
    sliding_only = (KvLayers("sliding", 32, 8, 128, 4096),)
    on = kv_capacity(sliding_only, 60 * GIB, element_bytes=2, tp=1, max_model_len=32768, max_num_batched_tokens=8192)
    assert kv_capacity(sliding_only, 60 * GIB, element_bytes=2, tp=1, max_model_len=32768, max_num_batched_tokens=8192, hybrid=False) == on


# Qwen3-Next-80B's gated-delta-net state per sequence and layer at TP 1, in elements: the conv
# window (kernel 4 - 1 = 3 tokens) over q, k (16 heads x 128 each) and v (32 heads x 128), and
# the recurrent state (32 value heads x 128 x 128).
QWEN3_NEXT_STATE = StateShape("gated_delta_net", 2 * 16 * 128 + 32 * 128, 3, 32, 128, 128)


def test_a_state_page_sets_the_attention_block_and_is_padded_to_it() -> None:
    """vLLM 0.26 (update_block_size_for_backend, prefix caching on, gated delta net: "align"
    mode): the attention block is the smallest multiple of the backend's 16 whose page holds
    one state; every page is that size; a request holds 2 blocks in each state group."""
    layers = (KvLayers("full", 12, 2, 256), KvLayers("state", 36, 0, 0, state=QWEN3_NEXT_STATE))
    state_page = (8192 * 3 + 32 * 128 * 128) * 2  # 1,097,728 B
    token_page = 2 * 2 * 256 * 2  # K and V, 2 KV heads x 256, bf16: 2,048 B
    assert math.ceil(state_page / token_page) == 536  # tokens of attention one state is worth
    assert QWEN3_NEXT_STATE.prefix_cache_mode == "align"
    assert block_size_for(layers, 2, 1, 2) == 544  # 34 x 16
    cap = kv_capacity(layers, 40 * GIB, element_bytes=2, tp=1, max_model_len=32768, max_num_batched_tokens=8192)
    assert (cap.block_size, cap.page_bytes) == (544, 544 * token_page)
    # 36 state layers, 12 full: groups of 12 -> 1 full group and 3 state groups
    assert (cap.group_size, cap.num_groups) == (12, 4)
    assert cap.num_blocks == 40 * GIB // (544 * token_page) // 12
    assert cap.blocks_per_request == math.ceil(32768 / 544) + 3 * STATE_BLOCKS_PER_REQUEST
    # fp8 KV halves the attention page: a state is worth 1,072 tokens (67 x 16)
    assert block_size_for(layers, 1, 1, 2) == 1072


def test_mamba2_states_are_cached_per_block_of_context_in_chunk_aligned_blocks() -> None:
    """vLLM 0.26 caches every block's state of a Mamba-2 model with prefix caching ("all"
    mode, SupportsMambaPrefixCaching): blocks are a multiple of the chunk size, and a request
    needs as many blocks in a state group as in a full-attention one. Nemotron-3-Nano's shapes:
    measured on an H200, block 2176 and 65.29 requests of 32k context."""
    nano = StateShape("mamba2", 64 * 64 + 2 * 8 * 128, 3, 64, 64, 128, groups=8, chunk_size=128, ssm_bytes=4)
    layers = (KvLayers("full", 6, 2, 128), KvLayers("state", 23, 0, 0, state=nano))
    state_page = (4096 + 2048) * 3 * 2 + 64 * 64 * 128 * 4  # 2,134,016 B
    token_page = 2 * 2 * 128 * 2  # 1,024 B
    assert nano.prefix_cache_mode == "all" and math.ceil(state_page / token_page) == 2084
    assert block_size_for(layers, 2, 1, 2) == 17 * 128  # 2176
    cap = kv_capacity(layers, 65 * GIB, element_bytes=2, tp=1, max_model_len=32768, max_num_batched_tokens=8192)
    # 23 state layers in groups of 6 (one padding layer), 1 full group
    assert (cap.group_size, cap.num_groups) == (6, 5)
    assert cap.blocks_per_request == 5 * math.ceil(32768 / 2176)


def test_state_shards_over_tensor_parallel_ranks_and_mamba_groups_are_replicated() -> None:
    assert QWEN3_NEXT_STATE.bytes(2, 2) == (8192 // 2 * 3 + 16 * 128 * 128) * 2
    # Nemotron-H-8B's Mamba-2 mixer: 8 groups of state 128 beside 128 heads x 64; at TP 16
    # vLLM replicates the groups to 16 so every rank holds whole ones (extra_groups_for_head_shards).
    # Its recurrent state is float32 (vLLM's Nemotron-H default), its conv state bf16.
    mamba = StateShape("mamba2", 128 * 64 + 2 * 8 * 128, 3, 128, 64, 128, groups=8, chunk_size=128, ssm_bytes=4)
    assert mamba.bytes(1, 2) == (8192 + 2048) * 3 * 2 + 128 * 64 * 128 * 4
    assert mamba.bytes(16, 2) == (8192 + 2 * 16 * 128) // 16 * 3 * 2 + 8 * 64 * 128 * 4


def test_sparse_attention_caches_the_indexer_keys_beside_the_latent_in_64_token_blocks() -> None:
    """DeepSeek-V3.2: 576 latent elements (bf16) + the indexer's 128 fp8 keys and one fp32
    scale per 128 in every layer, one group (UniformTypeKVCacheSpecs); fp8: fp8_ds_mla's 656 B."""
    layers = (KvLayers("mla", 61, 1, 576, indexer_bytes=128 + 4),)
    assert kv_bytes_per_token(layers, 2) == 61 * (576 * 2 + 132)
    assert kv_bytes_per_token(layers, 1) == 61 * (656 + 132)
    cap = kv_capacity(layers, 20 * GIB, element_bytes=2, tp=8, max_model_len=16384, max_num_batched_tokens=8192)
    assert (cap.block_size, cap.page_bytes) == (SPARSE_MLA_BLOCK_SIZE, 64 * (576 * 2 + 132))
    assert cap.num_blocks == 20 * GIB // (64 * 61 * (576 * 2 + 132))


def test_full_attention_layers_of_different_sizes_share_one_group_and_one_page() -> None:
    """Per-layer KV heads (nemotron-nas): one group whose page is every layer's (vLLM
    UniformTypeKVCacheSpecs), so a request needs ceil(len / 16) blocks, once."""
    layers = (KvLayers("full", 40, 8, 128), KvLayers("full", 9, 4, 128))
    cap = kv_capacity(layers, 30 * GIB, element_bytes=2, tp=1, max_model_len=8192, max_num_batched_tokens=8192)
    page = BLOCK_SIZE * (40 * 2 * 8 * 128 + 9 * 2 * 4 * 128) * 2
    assert (cap.group_size, cap.num_groups, cap.page_bytes) == (1, 1, page)
    assert cap.num_blocks == 30 * GIB // page and cap.blocks_per_request == 8192 // BLOCK_SIZE
