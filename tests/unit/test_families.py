"""Model families from real config.json files (tests/data/hf_configs, each with its `_source`):
parameter counts against the published sizes, KV bytes per token against hand derivations,
layer layouts, and a clear refusal, naming the key, of whatever the planner cannot model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from llmfleet.model_store.facts.families import ConfigError, facts_from_config
from llmfleet.model_store.facts.families.registry import INFERRED_REASON
from llmfleet.model_store.planning.kv_cache import kv_capacity, PagesNotUnifiable, state_bytes_per_sequence
from llmfleet.model_store.planning.text import kv_bytes_per_token, weight_bytes
from tests.conftest import REPO

CONFIGS = REPO / "tests/data/hf_configs"
# Model types the planner refuses (a different cache layout, or vLLM no longer serves them).
REFUSED = {
    "LiquidAI__LFM2.5-VL-1.6B": "model_type 'lfm2_vl'",  # convolution + attention hybrid
    "RedHatAI__DeepSeek-V4-Flash-NVFP4-FP8": "model_type 'deepseek_v4' cannot be planned yet: .*compressed sparse attention",
    "nvidia__DeepSeek-V4-Flash-NVFP4": "model_type 'deepseek_v4' cannot be planned yet: .*`compress_ratios`",
    "poolside__Laguna-XS.2-FP8": "model_type 'laguna'",  # per-layer head counts
    "meta-llama__Llama-3.2-11B-Vision-Instruct": "removed in vLLM 0.10.2",
    "meta-llama__Llama-3.2-90B-Vision-Instruct": "removed in vLLM 0.10.2",
}
PUBLISHED_TOLERANCE = 0.02


def _load(path: Path) -> tuple[dict, dict]:
    raw = json.loads(path.read_text())
    return {k: v for k, v in raw.items() if not k.startswith("_")}, raw.get("_published", {})


FIXTURES = sorted(CONFIGS.glob("*.json"))
PLANNED = [p for p in FIXTURES if p.stem not in REFUSED]


def facts(stem: str):
    return facts_from_config(_load(CONFIGS / f"{stem}.json")[0], source=stem)


def test_at_least_25_real_configs_are_planned() -> None:
    assert len(PLANNED) >= 25
    for path in FIXTURES:
        assert "_source" in json.loads(path.read_text()), path.name


@pytest.mark.parametrize("path", PLANNED, ids=lambda p: p.stem)
def test_parameters_and_weight_bytes_match_published_sizes(path: Path) -> None:
    config, published = _load(path)
    arch = facts_from_config(config, source=path.stem)
    if "parameters" in published:  # a card's "7 billion" is rounded: held to 5 %
        tolerance = 0.05 if published.get("rounded") else PUBLISHED_TOLERANCE
        assert abs(arch.parameters.total() / published["parameters"] - 1) <= tolerance
    if "total_size" in published:  # computed from the config alone, not read back from the index
        stored = weight_bytes(arch, arch.checkpoint_dtype, arch.weight_format)
        assert abs(stored / published["total_size"] - 1) <= PUBLISHED_TOLERANCE
    assert arch.parameters.total() > 0 and arch.kv_layers


# Model-card parameter counts, for fixtures whose copy carries none (each card states the
# figure; rounded ones like "7B" are not precise enough for a 2 % check and are left out).
CARD_PARAMETERS = {
    "Qwen__Qwen3-32B": 32.8e9,
    "Qwen__Qwen3-235B-A22B": 235e9,
    "Qwen__Qwen2.5-7B-Instruct": 7.61e9,
    "meta-llama__Llama-4-Scout-17B-16E-Instruct": 109e9,
    "meta-llama__Llama-3.1-8B-Instruct": 8.03e9,
    "Qwen__Qwen3-Next-80B-A3B-Thinking": 80e9,  # "80B in total and 3B activated"
    "Qwen__Qwen3.5-397B-A17B": 397e9,  # "397B in total and 17B activated"
    "Qwen__Qwen3-VL-4B-Instruct": 4.44e9,  # the Hub's safetensors count, LM and vision tower
    "nvidia__NVIDIA-Nemotron-3-Nano-30B-A3B-BF16": 31.6e9,  # Nemotron 3 Nano report: 31.6B total
    "meta-llama__Llama-3.1-70B-Instruct": 70.6e9,
    "meta-llama__Llama-3.2-1B-Instruct": 1.24e9,
    "meta-llama__Llama-3.2-3B-Instruct": 3.21e9,
    "Qwen__Qwen2.5-VL-7B-Instruct": 8.29e9,
    "google__gemma-2-9b-it": 9.24e9,
    "microsoft__phi-4": 14.7e9,
    "google__gemma-4-31B-it": 31e9,  # the name's "31B" (no card figure was found): LM and vision tower
}


@pytest.mark.parametrize("stem", sorted(CARD_PARAMETERS))
def test_parameters_match_model_cards(stem: str) -> None:
    assert abs(facts(stem).parameters.total() / CARD_PARAMETERS[stem] - 1) <= PUBLISHED_TOLERANCE


def test_deepseek_v3_checkpoint_holds_the_mtp_layer_vllm_does_not_load() -> None:
    arch = facts("deepseek-ai__DeepSeek-V3")
    assert abs(arch.parameters.total() / 671e9 - 1) < 0.01  # the model card's 671 B
    assert abs(arch.parameters.checkpoint_total() / 684.5e9 - 1) < 0.01  # the Hub's 685 B with MTP


# KV bytes per token of context at bf16, derived by hand from each config.
HAND_KV = {
    # Qwen3-MoE: 48 layers x K and V x 4 KV heads x head_dim 128 x 2 B
    "Qwen__Qwen3-30B-A3B": 48 * 2 * 4 * 128 * 2,
    # MLA: one latent of kv_lora_rank 512 + qk_rope_head_dim 64 per layer, 61 layers
    "deepseek-ai__DeepSeek-V3": 61 * (512 + 64) * 2,
    "moonshotai__Kimi-K2-Instruct": 61 * (512 + 64) * 2,
    # gpt-oss-20b: 24 layers (12 sliding, 12 full) x 2 x 8 KV heads x head_dim 64
    "openai__gpt-oss-20b": 24 * 2 * 8 * 64 * 2,
    # Llama-4 Scout: 48 layers (36 chunked, 12 global) x 2 x 8 x 128
    "meta-llama__Llama-4-Scout-17B-16E-Instruct": 48 * 2 * 8 * 128 * 2,
    # Gemma-2 9B: 42 layers x 2 x 8 KV heads x head_dim 256
    "google__gemma-2-9b-it": 42 * 2 * 8 * 256 * 2,
    # Gemma-3 1B: 26 layers x 2 x 1 KV head x head_dim 256
    "google__gemma-3-1b-it": 26 * 2 * 1 * 256 * 2,
    # Qwen2.5-VL 7B: the LM at the top level, 28 layers x 2 x 4 x 128
    "Qwen__Qwen2.5-VL-7B-Instruct": 28 * 2 * 4 * 128 * 2,
    # Mistral 3.1 wrapper: text_config 40 layers x 2 x 8 x 128
    "mistralai__Mistral-Small-3.1-24B-Instruct-2503": 40 * 2 * 8 * 128 * 2,
    "LGAI-EXAONE__EXAONE-4.0-32B": 64 * 2 * 8 * 128 * 2,
    # Qwen3-Next: only the 12 full-attention layers of 48 cache per token: 2 x 2 KV heads x 256
    "Qwen__Qwen3-Next-80B-A3B-Thinking": 12 * 2 * 2 * 256 * 2,
    # Qwen3.5-397B: 15 full-attention layers of 60, 2 KV heads x 256
    "Qwen__Qwen3.5-397B-A17B": 15 * 2 * 2 * 256 * 2,
    # Nemotron-3-Nano: 6 attention layers of 52 ("*" in hybrid_override_pattern), 2 KV heads x 128
    "nvidia__NVIDIA-Nemotron-3-Nano-30B-A3B-BF16": 6 * 2 * 2 * 128 * 2,
    # Qwen3-VL-4B: text_config's 36 layers x 2 x 8 KV heads x 128
    "Qwen__Qwen3-VL-4B-Instruct": 36 * 2 * 8 * 128 * 2,
    # Qwen3-VL-30B-A3B: text_config's 48 layers x 2 x 4 KV heads x 128
    "Qwen__Qwen3-VL-30B-A3B-Instruct": 48 * 2 * 4 * 128 * 2,
    # Kimi-K2.5: Kimi-K2's MLA latent (512 + 64) on each of text_config's 61 layers
    "moonshotai__Kimi-K2.5": 61 * (512 + 64) * 2,
    # MiMo-7B: 36 layers x 2 x 8 KV heads x 4096 / 32; the MTP layer is the drafter's, not cached here
    "XiaomiMiMo__MiMo-7B-Base": 36 * 2 * 8 * 128 * 2,
    # Phi-3.5-MoE: 32 layers x 2 x 8 KV heads x 4096 / 32
    "microsoft__Phi-3.5-MoE-instruct": 32 * 2 * 8 * 128 * 2,
    # Granite-4.0-H: 4 attention layers of 40 ("attention" in layer_types), 4 KV heads x 1536 / 12
    "ibm-granite__granite-4.0-h-tiny": 4 * 2 * 4 * 128 * 2,
    "ibm-granite__granite-4.0-h-1b": 4 * 2 * 4 * 128 * 2,
    # Falcon-H1: every layer attends (and keeps a state beside it): 2 KV heads x head_dim 128
    "tiiuae__Falcon-H1-7B-Instruct": 44 * 2 * 2 * 128 * 2,
    "tiiuae__Falcon-H1-3B-Instruct": 32 * 2 * 2 * 128 * 2,
    # Gemma-4 31B: 50 sliding layers x 2 x 16 KV heads x head_dim 256, 10 full layers x 2 x 4 x 512
    # (num_global_key_value_heads x global_head_dim; K also serves as V, but vLLM caches both)
    "google__gemma-4-31B-it": (50 * 2 * 16 * 256 + 10 * 2 * 4 * 512) * 2,
}

# State bytes per sequence at bf16, TP 1, derived by hand: per gated-delta-net layer a conv
# window of 3 tokens over q and k (key heads x key dim each) and v (value heads x value dim),
# and a value heads x value dim x key dim recurrent matrix.
HAND_STATE = {
    "Qwen__Qwen3-Next-80B-A3B-Thinking": 36 * ((2 * 16 * 128 + 32 * 128) * 3 + 32 * 128 * 128) * 2,
    "Qwen__Qwen3.5-397B-A17B": 45 * ((2 * 16 * 128 + 64 * 128) * 3 + 64 * 128 * 128) * 2,
    # Nemotron-3-Nano: 23 Mamba-2 layers ("M"), each a conv window of 3 tokens over x (64 heads
    # x 64) and B, C (8 groups x state 128) in bf16, and a 64 x 64 x 128 recurrent state in
    # float32 (the config's mamba_ssm_cache_dtype)
    "nvidia__NVIDIA-Nemotron-3-Nano-30B-A3B-BF16": 23 * ((64 * 64 + 2 * 8 * 128) * 3 * 2 + 64 * 64 * 128 * 4),
    # Granite-4.0-H: 36 Mamba-2 layers, the mixer mamba_expand 2 x 1536 wide (x) plus B, C of 1 group
    # x state 128, and a 48 heads x 64 x 128 recurrent state, all bf16
    "ibm-granite__granite-4.0-h-tiny": 36 * ((2 * 1536 + 2 * 1 * 128) * 3 * 2 + 48 * 64 * 128 * 2),
    "ibm-granite__granite-4.0-h-1b": 36 * ((2 * 1536 + 2 * 1 * 128) * 3 * 2 + 48 * 64 * 128 * 2),
    # Falcon-H1: a Mamba-2 state in every layer, mamba_d_ssm wide, 1 group x state 256
    "tiiuae__Falcon-H1-7B-Instruct": 44 * ((3072 + 2 * 1 * 256) * 3 * 2 + 24 * 128 * 256 * 2),
    "tiiuae__Falcon-H1-3B-Instruct": 32 * ((4096 + 2 * 1 * 256) * 3 * 2 + 32 * 128 * 256 * 2),
}


@pytest.mark.parametrize("stem", sorted(HAND_STATE))
def test_state_bytes_per_sequence_equal_hand_derivation(stem: str) -> None:
    arch = facts(stem)
    assert state_bytes_per_sequence(arch.kv_layers, 2) == HAND_STATE[stem]
    # constant in context length: nothing of it is per token
    assert kv_bytes_per_token(arch, "auto", "bfloat16") == HAND_KV[stem]


@pytest.mark.parametrize("stem", sorted(HAND_KV))
def test_kv_bytes_per_token_equal_hand_derivation(stem: str) -> None:
    assert kv_bytes_per_token(facts(stem), "auto", "bfloat16") == HAND_KV[stem]


def test_mla_is_a_latent_not_per_head_kv() -> None:
    arch = facts("deepseek-ai__DeepSeek-V3")
    per_head_dense = 2 * 61 * 128 * (128 + 64) * 2  # what a dense reading of 128 heads would say
    assert per_head_dense / kv_bytes_per_token(arch, "auto", "bfloat16") > 40
    # The latent is whole on every tensor-parallel rank.
    assert kv_bytes_per_token(arch, "auto", "bfloat16", tp=8) == kv_bytes_per_token(arch, "auto", "bfloat16")


@pytest.mark.parametrize(
    ("stem", "layout"),
    [
        ("openai__gpt-oss-20b", [("full", 12, None), ("sliding", 12, 128)]),
        ("openai__gpt-oss-120b", [("full", 18, None), ("sliding", 18, 128)]),
        ("google__gemma-2-9b-it", [("full", 21, None), ("sliding", 21, 4096)]),
        ("google__gemma-3-1b-it", [("full", 4, None), ("sliding", 22, 512)]),
        ("LGAI-EXAONE__EXAONE-4.0-32B", [("full", 16, None), ("sliding", 48, 4096)]),
        ("meta-llama__Llama-4-Scout-17B-16E-Instruct", [("full", 12, None), ("chunked", 36, 8192)]),
        ("mistralai__Mistral-7B-v0.1", [("sliding", 32, 4096)]),
        ("microsoft__Phi-3.5-MoE-instruct", [("sliding", 32, 131072)]),  # the window vLLM's cache config applies
        ("Qwen__Qwen2.5-7B-Instruct", [("full", 28, None)]),  # sliding_window set, use_sliding_window false
        ("deepseek-ai__DeepSeek-V3", [("mla", 61, None)]),
        ("Qwen__Qwen3-Next-80B-A3B-Thinking", [("full", 12, None), ("state", 36, None)]),
        ("Qwen__Qwen3.5-397B-A17B", [("full", 15, None), ("state", 45, None)]),
        ("nvidia__NVIDIA-Nemotron-3-Nano-30B-A3B-BF16", [("full", 6, None), ("state", 23, None)]),
        ("ibm-granite__granite-4.0-h-tiny", [("full", 4, None), ("state", 36, None)]),
        ("tiiuae__Falcon-H1-7B-Instruct", [("full", 44, None), ("state", 44, None)]),
        ("google__gemma-4-31B-it", [("full", 10, None), ("sliding", 50, 1024)]),
    ],
)
def test_layer_layouts(stem: str, layout: list) -> None:
    assert [(layer.kind, layer.count, layer.window) for layer in facts(stem).kv_layers] == layout


def test_moe_layouts() -> None:
    qwen = facts("Qwen__Qwen3-30B-A3B").moe
    assert (qwen.num_experts, qwen.experts_per_token, qwen.expert_intermediate_size, qwen.moe_layers) == (128, 8, 768, 48)
    deepseek = facts("deepseek-ai__DeepSeek-V3")
    assert (deepseek.moe.moe_layers, deepseek.moe.shared_intermediate_size) == (58, 2048)  # first 3 layers dense
    assert deepseek.intermediate_size == 18432
    scout = facts("meta-llama__Llama-4-Scout-17B-16E-Instruct").moe
    assert (scout.num_experts, scout.experts_per_token, scout.shared_intermediate_size) == (16, 1, 8192)
    # 30.5 B parameters, but 3.3 B active: the planner sizes all experts, vLLM loads them all.
    assert facts("Qwen__Qwen3-30B-A3B").parameters.experts > 28e9


def test_multimodal_wrappers_count_the_vision_tower() -> None:
    for stem in ("Qwen__Qwen2.5-VL-7B-Instruct", "mistralai__Mistral-Small-3.1-24B-Instruct-2503", "meta-llama__Llama-4-Scout-17B-16E-Instruct"):
        arch = facts(stem)
        assert "vision" in arch.family and 0.2e9 < arch.parameters.vision < 2e9, (stem, arch.parameters.vision)


def test_quantized_checkpoints_are_read_from_quantization_config() -> None:
    oss = facts("openai__gpt-oss-20b").weight_format
    assert (oss.method, oss.covers, oss.min_capability) == ("mxfp4", frozenset({"experts"}), 8.0)
    assert facts("deepseek-ai__DeepSeek-V3").weight_format.scheme == "FP8 block 128x128"
    devstral = facts("mistralai__Devstral-Small-2-24B-Instruct-2512").weight_format
    assert devstral.method == "fp8" and devstral.bytes_per_weight == 1.0


@pytest.mark.parametrize("stem", sorted(REFUSED))
def test_what_cannot_be_modelled_is_refused_naming_the_key(stem: str) -> None:
    with pytest.raises(ConfigError, match=REFUSED[stem]):
        facts(stem)


def _base() -> dict:
    return _load(CONFIGS / "meta-llama__Llama-3.1-8B-Instruct.json")[0]


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"hidden_size": None}, "hidden_size is missing"),
        ({"num_hidden_layers": "32"}, "num_hidden_layers must be an integer"),
        ({"num_key_value_heads": 5}, "num_key_value_heads (5) must divide num_attention_heads (32)"),
        ({"num_attention_heads": 0}, "num_attention_heads must be >= 1"),
        ({"model_type": None}, "model_type is missing"),
        ({"model_type": "rwkv", "rescale_every": 6}, "model_type 'rwkv' is not modelled by the planner and its key rescale_every"),
        ({"model_type": "x", "hidden_act": "relu2"}, "its key hidden_act 'relu2' is not one the planner's parts understand"),
        # a per-kind head size on a type outside the table: never a dense guess at the top-level head_dim
        ({"model_type": "x", "global_head_dim": 512}, "model_type 'x' is not modelled by the planner and its key global_head_dim"),
        ({"sliding_window": 4096}, "sliding_window is set (4096) for model_type 'llama'"),
        ({"layer_types": ["full_attention"] * 3}, "layer_types has 3 entries for 32 layers"),
        ({"layer_types": ["linear_attention"] * 32}, "entry 'linear_attention' is not modelled for model_type 'llama'"),
        ({"quantization_config": {"quant_method": "hqq"}}, "quant_method 'hqq' is not modelled"),
        ({"quantization_config": "fp8"}, "quantization_config must be an object"),
        ({"quantization_config": {"quant_method": "compressed-tensors"}}, "config_groups is missing"),
        ({"quantization_config": {"quant_method": "fp8", "weight_block_size": [128]}}, "weight_block_size"),
    ],
)
def test_malformed_configs_are_refused_naming_the_key(change: dict, fragment: str) -> None:
    config = {**_base(), **change}
    with pytest.raises(ConfigError) as caught:
        facts_from_config(config, source="bad/config.json")
    assert fragment in str(caught.value) and str(caught.value).startswith("bad/config.json: ")


def test_a_config_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(ConfigError, match="must be a JSON object"):
        facts_from_config(["not", "a", "config"], source="x")


def test_qwen3_next_reads_its_layout_from_the_interval_when_layer_types_is_absent() -> None:
    config = {k: v for k, v in _load(CONFIGS / "Qwen__Qwen3-Next-80B-A3B-Thinking.json")[0].items() if k != "layer_types"}
    assert facts_from_config(config).kv_layers == facts("Qwen__Qwen3-Next-80B-A3B-Thinking").kv_layers


def test_qwen3_5_is_a_gated_delta_net_moe_with_a_vision_tower_and_an_mtp_layer() -> None:
    arch = facts("Qwen__Qwen3.5-397B-A17B")
    assert arch.family == "GQA + MoE + gated-delta-net hybrid + vision"
    # q_proj yields the query and its output gate: 2 x 32 heads x 256
    assert arch.linear_shapes()["q_proj"] == (4096, 2 * 32 * 256)
    # 27 ViT layers of 1152 (~15.9 M each), a 2304-entry position table, the patch merger
    assert 0.4e9 < arch.parameters.vision < 0.5e9
    # the MTP layer (one full-attention MoE layer) is in the checkpoint, not served
    assert 6e9 < arch.parameters.not_loaded < 7e9


def test_a_model_type_outside_the_table_is_planned_only_from_keys_the_parts_understand() -> None:
    config = {**_base(), "model_type": "my_llama"}
    arch = facts_from_config(config, source="x")
    assert arch.inferred and arch.parameters.total() == facts("meta-llama__Llama-3.1-8B-Instruct").parameters.total()
    assert not facts("meta-llama__Llama-3.1-8B-Instruct").inferred


def test_an_inferred_model_type_says_so_in_the_plan() -> None:
    from llmfleet.model_store.contract.manifest import FleetManifest
    from llmfleet.model_store.planning.text import plan_model

    fleet = FleetManifest.model_validate(
        {"name": "f", "models": [{"name": "m", "source": "s3://llmfleet-store/models/m", "architecture": "x/my-llama"}]}
    )
    plan = plan_model(fleet, fleet.models[0], facts_from_config({**_base(), "model_type": "my_llama"}, source="x"))
    assert any("my_llama is not a registered model type" in r and INFERRED_REASON in r for r in plan.reasons)


def test_nemotron_h_blocks_are_a_mixer_or_an_mlp_each() -> None:
    """hybrid_override_pattern: 23 Mamba-2 (M), 6 attention (*), 23 MoE (E) layers; the MoE
    experts and the shared expert are up/down pairs (relu^2), one norm per block."""
    arch = facts("nvidia__NVIDIA-Nemotron-3-Nano-30B-A3B-BF16")
    assert arch.family == "GQA + MoE + Mamba-2 hybrid"
    assert (arch.moe.moe_layers, arch.moe.num_experts, arch.moe.shared_intermediate_size) == (23, 128, 3712)
    assert arch.parameters.experts == 23 * 128 * 2 * 2688 * 1856
    assert arch.parameters.norms == 52 * 2688 + 2688
    assert "gate_proj" not in arch.linear_shapes()


# DeepSeek-V3.2's config.json is DeepSeek-V3.1's with model_type deepseek_v32 and the indexer's
# three keys (DeepSeek-V3.2-Exp model card and vLLM's DeepseekV32ForCausalLM); no public copy of
# the file itself was found, so the test derives it from the V3.1 fixture.
DSA_KEYS = {"model_type": "deepseek_v32", "index_head_dim": 128, "index_n_heads": 64, "index_topk": 2048}


def test_sparse_attention_adds_the_indexer_to_every_mla_layer() -> None:
    v31 = facts("deepseek-ai__DeepSeek-V3.1")
    v32 = facts_from_config({**_load(CONFIGS / "deepseek-ai__DeepSeek-V3.1.json")[0], **DSA_KEYS}, source="x")
    # per layer: wq_b (q latent 1536 -> 64 heads x 128), wk (7168 -> 128), weights_proj
    # (7168 -> 64 heads) and a LayerNorm of the key (weight and bias)
    indexer = 1536 * 64 * 128 + 7168 * 128 + 7168 * 64 + 2 * 128
    assert v32.parameters.attention - v31.parameters.attention == 61 * indexer
    assert abs(v32.parameters.total() / 671.9e9 - 1) < PUBLISHED_TOLERANCE  # V3's 671 B + 0.85 B of indexers
    assert v32.family == "MLA + sparse-attention indexer + MoE"
    # bf16: the 576-element latent + 128 fp8 key bytes + one fp32 scale per 128 elements;
    # fp8: vLLM's fp8_ds_mla latent of 656 bytes instead
    assert kv_bytes_per_token(v32, "auto", "bfloat16") == 61 * (576 * 2 + 128 + 4)
    assert kv_bytes_per_token(v32, "fp8", "bfloat16") == 61 * (656 + 128 + 4)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"index_topk_freq": 4}, "index_topk_freq is set: indexers shared between layers are not modelled"),
        ({"kv_lora_rank": 256}, "kv_lora_rank must be 512 with qk_rope_head_dim 64"),
        ({"index_n_heads": None}, "index_n_heads is missing"),
    ],
)
def test_what_the_sparse_attention_part_cannot_size_is_refused(change: dict, fragment: str) -> None:
    config = {**_load(CONFIGS / "deepseek-ai__DeepSeek-V3.1.json")[0], **DSA_KEYS, **change}
    with pytest.raises(ConfigError, match=fragment):
        facts_from_config(config, source="x")


def test_minimax_m2_counts_256_experts_on_every_layer() -> None:
    """MiniMax-M2's dimensions as public copies of its config quote them (62 layers, hidden
    3072, 48 heads, 8 KV heads of 128, 256 experts of width `intermediate_size` 1536, top 8,
    vocabulary 200,064): the card's 230 B."""
    config = {
        "model_type": "minimax_m2", "hidden_size": 3072, "intermediate_size": 1536, "num_hidden_layers": 62,
        "num_attention_heads": 48, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 200064,
        "num_local_experts": 256, "num_experts_per_tok": 8, "tie_word_embeddings": False,
    }  # fmt: skip
    arch = facts_from_config(config, source="x")
    assert abs(arch.parameters.total() / 230e9 - 1) < PUBLISHED_TOLERANCE
    assert arch.parameters.experts == 62 * 256 * 3 * 3072 * 1536


# Llama-3.3-Nemotron-Super-49B's first 12 layers as its public config.json has them
# (code-search index id 5860950287, a copy of the Hub file): (n_heads_in_group or None for a
# no-op attention, ffn_mult); hidden 8192, 64 heads of 128, vocabulary 128,256.
SUPER_FIRST_LAYERS = [(8, 2.625)] + [(8, 5.25)] * 5 + [(None, 2.625)] * 2 + [(8, 5.25)] * 3 + [(None, 3.28125)]


def _nas_config(layers: list) -> dict:
    blocks = [
        {"attention": {"n_heads_in_group": group, "no_op": group is None, "replace_with_linear": False},
         "ffn": {"ffn_mult": mult, "no_op": False, "replace_with_linear": False}}
        for group, mult in layers
    ]  # fmt: skip
    return {
        "model_type": "nemotron-nas", "hidden_size": 8192, "num_attention_heads": 64, "num_key_value_heads": None,
        "num_hidden_layers": len(layers), "vocab_size": 128256, "block_configs": blocks, "tie_word_embeddings": False,
    }  # fmt: skip


def test_block_configs_give_each_layer_its_attention_and_mlp_width() -> None:
    arch = facts_from_config(_nas_config(SUPER_FIRST_LAYERS), source="x")
    # 9 layers attend with 64 / 8 = 8 KV heads of 128; the 3 no-op layers cache nothing
    assert kv_bytes_per_token(arch, "auto", "bfloat16") == 9 * 2 * 8 * 128 * 2
    # MLP widths: int(2 x ffn_mult x 8192 / 3) rounded up to a multiple of 256
    widths = {2.625: 14336, 5.25: 28672, 3.28125: 17920}
    assert arch.parameters.dense_mlp == sum(3 * 8192 * widths[mult] for _, mult in SUPER_FIRST_LAYERS)
    q_kv_o = 8192 * (64 * 128 + 2 * 8 * 128) + 64 * 128 * 8192
    assert arch.parameters.attention == 9 * q_kv_o
    assert arch.parameters.norms == (9 + 12) * 8192 + 8192  # an input norm only where attention is
    assert arch.family == "GQA + dense + per-layer blocks"


def test_block_configs_refuse_what_they_cannot_size() -> None:
    config = _nas_config(SUPER_FIRST_LAYERS)
    config["block_configs"][3]["attention"]["window_length"] = 4096
    with pytest.raises(ConfigError, match=r"block_configs\[3\]\.attention\.window_length is set"):
        facts_from_config(config, source="x")


def test_kimi_k25_is_kimi_k2_with_int4_experts_and_a_moonvit_tower() -> None:
    """Kimi-K2.5's quantization_config sits in text_config (vLLM's KimiK25Config lifts it):
    int4 groups of 32 on every Linear but the `ignore` regexes (attention, shared experts, the
    dense MLP), so only routed experts are int4. MoonViT (vt_* keys): 27 layers of 1152 with
    biased qkv/o and a fc0/fc1 MLP of 4304, a 64 x 64 position grid, 14 x 14 patches, and a
    patch merger (norm, 4608 -> 4608 -> 7168 over 2 x 2 patches)."""
    k25, k2 = facts("moonshotai__Kimi-K2.5"), facts("moonshotai__Kimi-K2-Instruct")
    fmt = k25.weight_format
    assert (fmt.method, fmt.covers) == ("compressed-tensors", frozenset({"experts"}))
    assert fmt.bytes_per_weight == 0.5 + 2 / 32  # int4 and a 16-bit scale per group of 32
    assert k25.parameters.experts == k2.parameters.experts and k25.parameters.attention == k2.parameters.attention
    h, mlp, merged = 1152, 4304, 4 * 1152
    layer = (4 * h * h + 4 * h) + (2 * h * mlp + mlp + h) + 4 * h
    merger = 2 * h + merged * merged + merged + merged * 7168 + 7168
    assert k25.parameters.vision == 27 * layer + 3 * 14 * 14 * h + 64 * 64 * h + merger
    assert k25.family == "MLA + MoE + vision"


def test_ignore_regexes_are_matched_against_module_names() -> None:
    config = _load(CONFIGS / "moonshotai__Kimi-K2.5.json")[0]

    def with_ignore(entries: list) -> dict:
        quant = {**config["text_config"]["quantization_config"], "ignore": entries}
        return {**config, "text_config": {**config["text_config"], "quantization_config": quant}}

    arch = facts_from_config(with_ignore(["lm_head", "re:.*self_attn.*"]))
    assert arch.weight_format.covers == frozenset({"experts", "shared_experts", "dense_mlp"})
    with pytest.raises(ConfigError, match=r"ignore entry 're:\.\*self_attn\.\(\*' is not a regular expression"):
        facts_from_config(with_ignore(["re:.*self_attn.(*"]), source="x")


def test_mimo_checkpoint_holds_an_mtp_layer_vllm_loads_only_as_its_drafter() -> None:
    """MiMo-7B is Qwen2 (q/k/v biases) with one MTP layer sharing the embeddings: a decoder
    layer, a 2h -> h input projection and three norms (vLLM mimo_mtp.py)."""
    arch = facts("XiaomiMiMo__MiMo-7B-Base")
    h, kv = 4096, 8 * 128
    attention = h * (h + 2 * kv) + h * h + (h + 2 * kv)
    mlp = 3 * h * 11008
    assert arch.parameters.attention == 36 * attention and arch.parameters.dense_mlp == 36 * mlp
    assert arch.parameters.not_loaded == attention + mlp + 2 * h * h + 3 * h
    assert arch.parameters.total() == 36 * (attention + mlp + 2 * h) + h + 2 * 151680 * h


def _mamba2_mixer(hidden: int, inner: int, heads: int, groups: int, state: int, kernel: int) -> int:
    """in_proj to z, x, B, C and dt; a biased conv over x, B, C; A, D, dt bias; gated norm; out_proj."""
    conv = inner + 2 * groups * state
    return hidden * (inner + conv + heads) + conv * (kernel + 1) + 3 * heads + inner + inner * hidden


def test_granite_4_h_layers_carry_experts_and_a_shared_mlp_or_that_mlp_alone() -> None:
    """Granite-4.0-H (vLLM granitemoehybrid.py): every layer, Mamba-2 or attention, has 64
    routed experts of `intermediate_size` 512 and a shared MLP of `shared_intermediate_size`;
    the dense H-1B (num_local_experts 0) has only that MLP, 4096 wide."""
    tiny, dense = facts("ibm-granite__granite-4.0-h-tiny"), facts("ibm-granite__granite-4.0-h-1b")
    assert (tiny.moe.num_experts, tiny.moe.experts_per_token, tiny.moe.moe_layers) == (64, 6, 40)
    assert tiny.parameters.experts == 40 * 64 * 3 * 1536 * 512
    assert tiny.parameters.shared_experts == 40 * 3 * 1536 * 1024
    assert dense.moe is None and dense.parameters.dense_mlp == 40 * 3 * 1536 * 4096
    attention = 1536 * (1536 + 2 * 4 * 128) + 1536 * 1536
    mamba = _mamba2_mixer(1536, 2 * 1536, 48, 1, 128, 4)
    assert tiny.parameters.attention == dense.parameters.attention == 4 * attention + 36 * mamba
    assert tiny.family == "GQA + MoE + Mamba-2 hybrid" and dense.family == "GQA + dense + Mamba-2 hybrid"


def test_falcon_h1_layers_run_attention_and_mamba2_side_by_side() -> None:
    """Falcon-H1 (vLLM falcon_h1.py FalconH1ParallelHybrid): each of 44 layers has attention,
    a Mamba-2 mixer `mamba_d_ssm` 3072 wide and a gated MLP, under two norms."""
    arch = facts("tiiuae__Falcon-H1-7B-Instruct")
    attention = 3072 * (12 * 128 + 2 * 2 * 128) + 12 * 128 * 3072
    assert arch.parameters.attention == 44 * (attention + _mamba2_mixer(3072, 3072, 24, 1, 256, 4))
    assert arch.parameters.dense_mlp == 44 * 3 * 3072 * 12288
    assert arch.parameters.norms == 44 * 2 * 3072 + 3072
    config = {**_load(CONFIGS / "tiiuae__Falcon-H1-7B-Instruct.json")[0], "layer_types": ["attention"] * 44}
    with pytest.raises(ConfigError, match="layer_types is set for model_type 'falcon_h1', whose layers each run attention"):
        facts_from_config(config, source="x")


def test_falcon_h1_keeps_a_state_and_attention_pages_in_two_groups_of_every_layer() -> None:
    """vLLM's page unification on Falcon-H1-7B: an attention block large enough that its page
    holds one layer's state, in multiples of mamba_chunk_size 128; 44 full and 44 state layers
    make one group each, and with prefix caching a request keeps a state per block of context
    ("all" mode)."""
    arch = facts("tiiuae__Falcon-H1-7B-Instruct")
    state_page = (3072 + 2 * 256) * 3 * 2 + 24 * 128 * 256 * 2  # 1,594,368 B
    token_page = 2 * 2 * 128 * 2  # K and V of 2 KV heads x 128, bf16: 1,024 B
    assert math.ceil(state_page / token_page) == 1557
    cap = kv_capacity(
        arch.kv_layers, 20 * 2**30, element_bytes=2, tp=1, max_model_len=32768, max_num_batched_tokens=8192
    )
    assert (cap.block_size, cap.group_size, cap.num_groups) == (13 * 128, 44, 2)
    assert cap.blocks_per_request == 2 * math.ceil(32768 / 1664)


def test_tensor_parallelism_must_split_the_state_heads() -> None:
    from llmfleet.model_store.planning.fit import _valid_tp_sizes

    # Qwen3-Next: 16 attention heads, 2 KV heads (replicated past 2), 32 value heads of state
    assert _valid_tp_sizes(facts("Qwen__Qwen3-Next-80B-A3B-Thinking"), 8) == [1, 2, 4, 8]
    config = {**_load(CONFIGS / "Qwen__Qwen3-Next-80B-A3B-Thinking.json")[0], "linear_num_value_heads": 12}
    assert _valid_tp_sizes(facts_from_config(config, source="x"), 8) == [1, 2, 4]


def _gemma4(**text_changes) -> dict:
    config = _load(CONFIGS / "google__gemma-4-31B-it.json")[0]
    return {**config, "text_config": {**config["text_config"], **text_changes}}


def test_gemma4_layers_attend_with_their_kinds_heads_and_vllm_holds_v_where_k_serves_as_v() -> None:
    arch = facts("google__gemma-4-31B-it")
    h, heads = 5376, 32
    sliding = h * heads * 256 + 2 * h * 16 * 256 + heads * 256 * h + 2 * 256  # q, k, v, o, q/k norms
    full = h * heads * 512 + 2 * h * 4 * 512 + heads * 512 * h + 2 * 512  # v_proj filled from k_proj
    assert arch.parameters.attention == 50 * sliding + 10 * full
    assert arch.parameters.not_stored == 10 * h * 4 * 512
    assert arch.parameters.checkpoint_total() == arch.parameters.total() - 10 * h * 4 * 512
    assert arch.parameters.dense_mlp == 60 * 3 * h * 21504 and arch.tie_word_embeddings
    assert (arch.num_kv_heads, arch.head_dim) == (4, 512)  # TP splits both kinds; the widest head sizes activations
    # SigLIP-style tower: 27 layers, gated MLP, an x and a y table of 10,240 positions, one linear into the LM
    assert 0.5e9 < arch.parameters.vision < 0.65e9


def test_gemma4_pages_are_unified_by_giving_the_smaller_full_layer_pages_more_tokens() -> None:
    """vLLM 0.26 unify_kv_cache_spec_page_size: a sliding layer's 16-token page (2 x 16 heads x 256
    x 2 B x 16 = 256 KiB) is twice a full layer's, so full layers take 32 tokens a block; 50 sliding
    and 10 full layers make groups of 10 (the rarer kind): 5 sliding groups and 1 full."""
    arch = facts("google__gemma-4-31B-it")
    budget, length, batched = 64 * 2**30, 32768, 8192
    cap = kv_capacity(arch.kv_layers, budget, element_bytes=2, tp=1, max_model_len=length, max_num_batched_tokens=batched)
    page = 16 * 2 * 16 * 256 * 2
    assert (cap.block_size, cap.page_bytes, cap.group_size, cap.num_groups) == (16, page, 10, 6)
    sliding_blocks = math.ceil(min(1024 - 1 + 2 * batched, length) / 16) + 1
    full_blocks = math.ceil(length / 32)
    assert cap.blocks_per_request == 5 * sliding_blocks + full_blocks
    assert cap.num_blocks == budget // page // 10
    assert cap.tokens == int(cap.num_blocks / (5 * sliding_blocks + full_blocks) * length)


def test_pages_that_do_not_divide_the_largest_are_refused() -> None:
    """vLLM 0.26 cannot unify them by tokens per block (padding is left to a few backends)."""
    arch = facts_from_config(_gemma4(num_attention_heads=24, num_key_value_heads=12, num_global_key_value_heads=8))
    with pytest.raises(PagesNotUnifiable, match=r"50 sliding layers cache 196,608 bytes a block, which does not divide the largest page \(262,144 bytes\)"):
        kv_capacity(arch.kv_layers, 2**34, element_bytes=2, tp=1, max_model_len=8192, max_num_batched_tokens=8192)


def test_gemma4_kv_shared_layers_keep_no_cache_of_their_own() -> None:
    arch = facts_from_config(_gemma4(num_kv_shared_layers=12))  # the last 12: 10 sliding, 2 full
    assert [(layer.kind, layer.count) for layer in arch.kv_layers] == [("full", 8), ("sliding", 40)]
    assert arch.parameters.attention == facts("google__gemma-4-31B-it").parameters.attention  # their weights stay


def test_gemma4_experts_run_beside_the_dense_mlp_of_every_layer() -> None:
    """Gemma-4 26B-A4B's published shape (128 experts of 704, top 8, a 2,112-wide dense MLP on each
    of 30 layers); no whole config.json of it was found, so this holds the MoE part to its derivation."""
    h, layers = 2816, 30
    config = _gemma4(
        hidden_size=h, num_hidden_layers=layers, layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 5,
        num_attention_heads=16, num_key_value_heads=8, num_global_key_value_heads=2, intermediate_size=2112,
        enable_moe_block=True, num_experts=128, top_k_experts=8, moe_intermediate_size=704,
    )  # fmt: skip
    arch = facts_from_config(config)
    assert (arch.moe.num_experts, arch.moe.experts_per_token, arch.moe.moe_layers) == (128, 8, 30)
    assert arch.parameters.experts == layers * 128 * 3 * h * 704
    assert arch.parameters.dense_mlp == layers * 3 * h * 2112
    # router projection, its input scale, per-expert scales, and the block's three norms
    assert arch.parameters.router == layers * (h * 128 + h + 128 + 3 * h)
    assert 24e9 < arch.parameters.checkpoint_total() < 27.5e9  # "26B" with its vision tower


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"hidden_size_per_layer_input": 256}, "text_config.hidden_size_per_layer_input is set: per-layer input embeddings"),
        ({"num_kv_shared_layers": 20, "use_double_wide_mlp": True}, "use_double_wide_mlp is true"),
        ({"num_kv_shared_layers": 60}, "num_kv_shared_layers leaves no layer with a cache"),
        ({"num_kv_shared_layers": 55}, "leaves no full layer whose cache"),
        ({"num_global_key_value_heads": 5}, "num_global_key_value_heads (5) must divide num_attention_heads (32)"),
    ],
)
def test_what_gemma4_parts_cannot_size_is_refused(change: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        facts_from_config(_gemma4(**change), source="g/config.json")
    assert fragment in str(caught.value)


def test_an_audio_tower_is_refused() -> None:
    with pytest.raises(ConfigError, match="audio_config is set: an audio tower"):
        facts_from_config({**_gemma4(), "audio_config": {"model_type": "gemma4_audio"}})
