"""standin_plan: the CPU-runnable twin of a GPU plan keeps what promotion and drain depend
on and drops what needs a GPU. (The e2e session server runs such a plan on the CPU vLLM.)"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from llmfleet.model_store.planning.fleet import load_fleet_and_lock, plan_with_lock
from llmfleet.model_store.contract.plan import ServingPlan
from llmfleet.model_store.planning.standin import STANDIN_DTYPE, STANDIN_MAX_NUM_SEQS, standin_plan

REPO = Path(__file__).resolve().parents[2]
FLEET, LOCK = load_fleet_and_lock(REPO / "fleet.yaml")
PLANS = {plan.model_name: plan for plan in plan_with_lock(FLEET, LOCK)}


def _standin(name: str, **kwargs) -> tuple[ServingPlan, ServingPlan]:
    plan = PLANS[name]
    return plan, standin_plan(plan, LOCK.models[name].model.facts(), **kwargs)


@pytest.mark.parametrize("name", sorted(PLANS))
def test_gpu_only_settings_are_dropped(name: str):
    _, standin = _standin(name)

    assert standin.vllm.quantization is None
    assert standin.vllm.speculative_config is None
    assert standin.vllm.kv_cache_dtype == "auto"
    assert standin.vllm.load_format == "auto" and not standin.streams_weights
    assert standin.vllm.tensor_parallel_size == standin.tensor_parallel_size == 1
    assert standin.vllm.dtype == STANDIN_DTYPE


@pytest.mark.parametrize("name", sorted(PLANS))
def test_identity_adapters_and_drain_are_kept(name: str):
    plan, standin = _standin(name)

    assert (standin.model_name, standin.stage, standin.adapters) == (plan.model_name, plan.stage, plan.adapters)
    assert standin.vllm.served_model_name == plan.vllm.served_model_name
    assert (standin.vllm.enable_lora, standin.vllm.max_lora_rank, standin.vllm.max_loras) == (
        plan.vllm.enable_lora,
        plan.vllm.max_lora_rank,
        plan.vllm.max_loras,
    )
    assert standin.vllm.shutdown_timeout == plan.vllm.shutdown_timeout
    assert standin.vllm.reasoning_parser == plan.vllm.reasoning_parser


def test_context_and_batching_shrink_to_the_stand_in():
    plan, standin = _standin("qwen3-small", max_model_len=256)

    assert plan.vllm.max_model_len == 8192
    assert standin.vllm.max_model_len == 256
    assert standin.vllm.max_num_seqs == STANDIN_MAX_NUM_SEQS
    assert standin.vllm.max_num_batched_tokens >= standin.vllm.max_model_len


def test_context_never_exceeds_the_stand_in_positions():
    plan = PLANS["qwen3-small"]
    arch = replace(LOCK.models["qwen3-small"].model.facts(), max_position_embeddings=300)

    assert standin_plan(plan, arch, max_model_len=512).vllm.max_model_len == 300


def test_the_original_plan_is_untouched_and_the_reason_recorded():
    plan, standin = _standin("llama3-70b")

    assert plan.streams_weights and plan.vllm.speculative_config is not None
    assert standin.reasons[:-1] == plan.reasons
    assert "stand-in for CPU" in standin.reasons[-1]


def test_the_stand_in_round_trips_through_llmfleet_plan_json():
    _, standin = _standin("qwen3-small")

    assert ServingPlan.from_json(standin.to_json()) == standin


@pytest.mark.parametrize("parser", ["deepseek_r1", "qwen3"])
def test_the_stand_in_tokenizer_starts_vllms_reasoning_parsers(parser: str):
    """vLLM refuses to start a reasoning model whose vocabulary lacks <think> and </think>."""
    from vllm.reasoning import ReasoningParserManager

    from llmfleet.scripts.standin_model import THINK_TOKENS, _train_tokenizer

    tokenizer = _train_tokenizer()
    ReasoningParserManager.get_reasoning_parser(parser)(tokenizer)

    assert all(len(tokenizer.encode(token)) == 1 for token in THINK_TOKENS)
    assert tokenizer.decode(tokenizer.encode("<think>why</think>so"), skip_special_tokens=True) == "<think>why</think>so"
