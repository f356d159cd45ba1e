"""KV capacity as vLLM's allocator counts it (vllm/v1/core/kv_cache_utils.py): groups of
layers, blocks, what one request may hold, and the 'GPU KV cache size' vLLM logs."""

from __future__ import annotations

import math

import pytest

from model_store.families import KvLayers
from model_store.kv_cache import BLOCK_SIZE, FP8_MLA_BLOCK_SIZE, IN_FLIGHT_BATCHES, kv_capacity, kv_groups

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
