"""Planner: figures equal hand-computed ones; choices and refusals; properties over random models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from llmfleet.model_store.facts.architectures import ArchitectureFacts, facts_from_config, known_architecture
from llmfleet.model_store.facts.families.quantization import ONLINE_FORMATS
from llmfleet.model_store.planning.catalog import Gpu, GpuInstance, L4
from llmfleet.model_store.contract.manifest import FleetManifest, ModelSpec, parse_fleet
from llmfleet.model_store.contract.plan import GIB, ServingPlan, vllm_argv
from llmfleet.model_store.planning.fit import PlanError
from llmfleet.model_store.planning.kinds import plan_fleet
from llmfleet.model_store.planning.text import kv_bytes_per_token, plan_model, weight_bytes
from llmfleet.model_store.planning.fleet import load_and_plan

REPO = Path(__file__).resolve().parents[2]

# Hand-computed from each public config.json. Parameters: embeddings (x2 unless tied) +
# layers x (q, k, v, o projections [+ qkv bias] + 2 norms [+ q/k norms] + 3 MLP matrices x
# experts [+ router]) + final norm. They match the counts the model cards publish.
# KV bytes/token at bf16: 2 (K and V) x layers x KV heads x head_dim x 2 bytes.
HAND_COMPUTED = {
    # Qwen3-0.6B: head_dim 128 is explicit (hidden/heads would say 64); 0.44 B non-embedding.
    "Qwen/Qwen3-0.6B": (
        151936 * 1024 + 28 * (1024 * 2048 * 2 + 1024 * 1024 * 2 + 2 * 1024 + 2 * 128 + 3 * 1024 * 3072) + 1024,
        2 * 28 * 8 * 128 * 2,
    ),
    # R1-Distill-Qwen-14B has 48 layers (the seed's 40 is wrong) and qkv biases.
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B": (
        2 * 152064 * 5120
        + 48 * (5120 * 5120 * 2 + 5120 * 1024 * 2 + (40 + 16) * 128 + 2 * 5120 + 3 * 5120 * 13824)
        + 5120,
        2 * 48 * 8 * 128 * 2,
    ),
    # Mistral Small 24B: explicit head_dim 128 (hidden/heads = 160).
    "mistralai/Mistral-Small-24B-Instruct-2501": (
        2 * 131072 * 5120 + 40 * (5120 * 4096 * 2 + 5120 * 1024 * 2 + 2 * 5120 + 3 * 5120 * 32768) + 5120,
        2 * 40 * 8 * 128 * 2,
    ),
    "meta-llama/Meta-Llama-3-70B-Instruct": (70_553_706_496, 2 * 80 * 8 * 128 * 2),
    "meta-llama/Llama-3.1-8B-Instruct": (8_030_261_248, 2 * 32 * 8 * 128 * 2),
    "Qwen/Qwen2.5-7B-Instruct-AWQ": (7_615_616_512, 2 * 28 * 4 * 128 * 2),
    "mistralai/Mixtral-8x7B-Instruct-v0.1": (46_702_792_704, 2 * 32 * 8 * 128 * 2),
    "meta-llama/Llama-3.2-1B-Instruct": (1_235_814_400, 2 * 16 * 8 * 64 * 2),
}


@pytest.mark.parametrize("hf_id", sorted(HAND_COMPUTED))
def test_parameters_and_kv_bytes_equal_hand_computed(hf_id: str) -> None:
    params, kv_per_token = HAND_COMPUTED[hf_id]
    arch = known_architecture(hf_id)
    assert arch.parameter_count() == params
    assert kv_bytes_per_token(arch, "auto", "bfloat16") == kv_per_token
    assert kv_bytes_per_token(arch, "fp8", "bfloat16") == kv_per_token // 2
    assert weight_bytes(arch, "bfloat16", None) == 2 * params
    assert arch.family == ("GQA + MoE" if arch.is_moe else "GQA + dense")


def test_seed_formulas_would_have_been_wrong() -> None:
    """The seed multiplied hidden size by KV heads and gave the 14B model 40 layers."""
    arch = known_architecture("deepseek-ai/DeepSeek-R1-Distill-Qwen-14B")
    right = kv_bytes_per_token(arch, "auto", "bfloat16")
    assert right == 196_608  # 192 KiB
    assert right != 2 * 40 * 8 * 128 * 2
    assert right != 2 * 48 * 5120 * 8 * 2
    assert known_architecture("Qwen/Qwen3-0.6B").head_dim == 128


def test_quantized_weight_bytes_match_published_checkpoint_sizes() -> None:
    awq = known_architecture("Qwen/Qwen2.5-7B-Instruct-AWQ")
    embeddings = 2 * 152064 * 3584
    norms = 28 * 2 * 3584 + 3584  # RMSNorm weights stay 16 bit
    expected = int((7_615_616_512 - embeddings - norms) * (0.5 + 2.5 / 128) + (embeddings + norms) * 2)
    assert weight_bytes(awq, "float16", awq.weight_format) == expected
    assert 5.4e9 < expected < 5.8e9  # the published checkpoint is 5.58 GB
    mistral = known_architecture("mistralai/Mistral-Small-24B-Instruct-2501")
    embeddings = 2 * 131072 * 5120
    norms = 40 * 2 * 5120 + 5120
    online = ONLINE_FORMATS["fp8"]
    assert weight_bytes(mistral, "bfloat16", online) == (mistral.parameter_count() - embeddings - norms) + (embeddings + norms) * 2


def test_kv_heads_split_across_tensor_parallel_ranks_and_replicate_past_them() -> None:
    llama = known_architecture("meta-llama/Meta-Llama-3-70B-Instruct")
    assert kv_bytes_per_token(llama, "auto", "bfloat16", tp=4) == 2 * 80 * 2 * 128 * 2
    assert kv_bytes_per_token(llama, "auto", "bfloat16", tp=8) == 2 * 80 * 1 * 128 * 2
    awq = known_architecture("Qwen/Qwen2.5-7B-Instruct-AWQ")  # 4 KV heads
    assert kv_bytes_per_token(awq, "auto", "float16", tp=8) == 2 * 28 * 1 * 128 * 2


@pytest.fixture(scope="module")
def example_plans() -> dict[str, ServingPlan]:
    return {p.model_name: p for p in load_and_plan(REPO / "fleet.yaml")[1]}


def test_r1_distill_budget_equals_hand_computed(example_plans: dict[str, ServingPlan]) -> None:
    plan = example_plans["r1-distill-14b"]
    assert (plan.instance_type, plan.tensor_parallel_size) == ("g6.12xlarge", 4)
    usable = int(23_034 * 2**20 * 0.90)  # L4 memory.total x gpu_memory_utilization
    weights = math.ceil(14_770_033_664 * 2 / 4)
    activations = 4096 * (4 * 5120 + 2 * 13824 // 4) * 2 + 256 * 152064 * 4 // 4
    reserve = int(1.5 * GIB) + int(0.5 * GIB)  # runtime + NCCL with TP
    kv_cache = usable - weights - activations - reserve
    # vLLM: 16-token pages of each of 48 layers, 8 KV heads / 4 ranks = 2 per GPU.
    blocks = kv_cache // (16 * 2 * 2 * 128 * 2) // 48
    assert plan.memory.kv_cache_bytes_per_gpu == kv_cache
    assert plan.memory.kv_blocks == blocks
    assert plan.memory.token_capacity == blocks * 16  # max_model_len is a whole number of blocks
    assert plan.memory.max_concurrency == blocks * 16 // 16384
    assert plan.memory.max_concurrency >= 4


def test_example_fleet_choices(example_plans: dict[str, ServingPlan]) -> None:
    small = example_plans["qwen3-small"]
    assert small.sagemaker_instance_type == "ml." + small.instance_type
    assert small.vllm.enable_lora and small.vllm.max_lora_rank == 16
    fp8 = example_plans["mistral-small-24b-fp8"]
    assert fp8.gpu_name == "NVIDIA L40S" and fp8.gpu_memory_bytes >= 40 * GIB  # a 40-48 GB GPU
    assert fp8.vllm.quantization == "fp8" and fp8.vllm.kv_cache_dtype == "fp8"
    llama = example_plans["llama3-70b"]
    assert llama.tensor_parallel_size > 1
    assert llama.vllm.speculative_config == {"model": "meta-llama/Llama-3.2-1B-Instruct", "num_speculative_tokens": 4}
    assert llama.vllm.load_format == "runai_streamer"
    assert llama.model_location() == "s3://llmfleet-store/models/llama3-70b/main"  # the revision's prefix
    awq = example_plans["qwen25-7b-awq"]
    # A pre-quantized checkpoint's method is not passed: vLLM reads quantization_config and
    # picks its fastest kernel (Marlin); the flag is for online quantization only.
    assert awq.vllm.quantization is None and awq.vllm.dtype == "float16"
    assert awq.weight_format.startswith("awq int4 g128")
    assert example_plans["r1-distill-14b"].vllm.reasoning_parser == "deepseek_r1"
    for plan in example_plans.values():
        argv = vllm_argv(plan.vllm, model=plan.model_location())
        assert "--enforce-eager" not in argv
        assert not any("V0" in a or "speculative-model" in a for a in argv)
        assert plan.timing.startup_grace_seconds >= 300
        assert plan.vllm.shutdown_timeout < plan.timing.drain_seconds


def test_plan_round_trips_through_json(example_plans: dict[str, ServingPlan]) -> None:
    for plan in example_plans.values():
        assert ServingPlan.from_json(plan.to_json()) == plan
        json.loads(plan.to_json())


def test_vllm_argv_is_a_view_of_the_settings(example_plans: dict[str, ServingPlan]) -> None:
    plan = example_plans["qwen3-small"]
    argv = vllm_argv(plan.vllm, model="/m", port=8080, lora_modules={"legal": "/a/legal", "finance": "/a/finance"})
    assert argv[:6] == ["--model", "/m", "--host", "0.0.0.0", "--port", "8080"]
    assert argv[argv.index("--max-model-len") + 1] == "8192"
    assert "--enable-lora" in argv and "--enable-prefix-caching" in argv
    assert argv[-3:] == ["--lora-modules", "finance=/a/finance", "legal=/a/legal"]
    assert "--quantization" not in argv  # None is omitted
    no_cache = plan.vllm.model_copy(update={"enable_prefix_caching": False})
    assert "--no-enable-prefix-caching" in vllm_argv(no_cache, model="/m")
    spec = example_plans["llama3-70b"].vllm
    rendered = vllm_argv(spec, model="s3://b/m")
    assert json.loads(rendered[rendered.index("--speculative-config") + 1])["num_speculative_tokens"] == 4


def _fleet(**model) -> tuple[FleetManifest, ModelSpec]:
    base = {"name": "m", "source": "s3://llmfleet-store/models/m", "architecture": "Qwen/Qwen3-8B"}
    fleet = FleetManifest.model_validate({"name": "f", "models": [{**base, **model}]})
    return fleet, fleet.models[0]


def test_refusal_carries_the_numbers() -> None:
    fleet, spec = _fleet(architecture="meta-llama/Meta-Llama-3-70B-Instruct", serving={"instance_type": "g6.xlarge"})
    with pytest.raises(PlanError) as caught:
        plan_model(fleet, spec, known_architecture(spec.architecture))
    message = str(caught.value)
    assert "model 'm' fits no pinned instance" in message
    assert "g6.xlarge TP=1: weights 131.4 GiB" in message and "exceed the usable 20.2 GiB" in message


def test_concurrency_shortfall_is_refused_with_token_counts() -> None:
    fleet, spec = _fleet(max_model_len=32768, serving={"instance_type": "g5.xlarge", "target_concurrency": 64})
    with pytest.raises(PlanError, match=r"needs 64 \(2,097,152 tokens\)"):
        plan_model(fleet, spec, known_architecture(spec.architecture))


def test_quantization_conflict_with_checkpoint_is_an_error() -> None:
    fleet, spec = _fleet(architecture="Qwen/Qwen2.5-7B-Instruct-AWQ", quantization="gptq")
    with pytest.raises(PlanError, match=r"field 'quantization': manifest says 'gptq' but the checkpoint is pre-quantized with 'awq'"):
        plan_model(fleet, spec, known_architecture(spec.architecture))
    fleet, spec = _fleet(architecture="Qwen/Qwen2.5-7B-Instruct-AWQ", quantization="none")
    with pytest.raises(PlanError, match="cannot be served unquantized"):
        plan_model(fleet, spec, known_architecture(spec.architecture))


def test_hardware_limits_exclude_instances() -> None:
    fleet, spec = _fleet(serving={"instance_type": "g4dn.xlarge"})  # T4: no bfloat16
    with pytest.raises(PlanError, match="has no bfloat16"):
        plan_model(fleet, spec, known_architecture(spec.architecture))
    fleet, spec = _fleet(quantization="fp8", serving={"instance_type": "g5.2xlarge"})  # A10G: no FP8
    with pytest.raises(PlanError, match=r"fp8 \(FP8 per-tensor \(online\)\) kernels need compute capability >= 8.9"):
        plan_model(fleet, spec, known_architecture(spec.architecture))
    fleet, spec = _fleet(architecture="Qwen/Qwen3-0.6B", dtype="float16", serving={"instance_type": "g4dn.xlarge"})
    assert plan_model(fleet, spec, known_architecture(spec.architecture)).instance_type == "g4dn.xlarge"


def test_context_beyond_the_model_is_refused() -> None:
    fleet, spec = _fleet(max_model_len=65536)
    with pytest.raises(PlanError, match="exceeds the model's max_position_embeddings 40960"):
        plan_model(fleet, spec, known_architecture(spec.architecture))


def test_plan_fleet_reports_every_failing_model() -> None:
    fleet = parse_fleet(
        """
name: f
models:
  - {name: a, source: s3://llmfleet-store/models/a, architecture: Qwen/Qwen3-8B, max_model_len: 65536}
  - {name: b, source: s3://llmfleet-store/models/b, architecture: Qwen/Qwen3-8B, serving: {instance_type: g4dn.xlarge}}
"""
    )
    with pytest.raises(PlanError) as caught:
        plan_fleet(fleet, lambda spec: known_architecture(spec.architecture))
    assert "model 'a'" in str(caught.value) and "model 'b'" in str(caught.value)


# --- properties over random architectures and GPUs ----------------------------------------


@st.composite
def architectures(draw) -> ArchitectureFacts:
    heads = draw(st.sampled_from([8, 12, 16, 28, 32, 40, 48, 64]))
    kv_heads = draw(st.sampled_from([d for d in (1, 2, 4, 8, heads) if heads % d == 0]))
    head_dim = draw(st.sampled_from([64, 128]))
    hidden = heads * head_dim
    layers = draw(st.integers(2, 96))
    config = {
        "model_type": draw(st.sampled_from(["llama", "qwen2", "qwen3", "mistral", "gemma3_text", "gpt_oss"])),
        "hidden_size": hidden,
        "intermediate_size": hidden * draw(st.integers(2, 5)),
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "vocab_size": draw(st.integers(1000, 160_000)),
        "tie_word_embeddings": draw(st.booleans()),
        "max_position_embeddings": 131072,
        "torch_dtype": "bfloat16",
    }
    if config["model_type"] in ("gemma3_text", "gpt_oss"):  # hybrid sliding-window layouts
        config["sliding_window"] = draw(st.sampled_from([128, 512, 4096]))
        config["layer_types"] = [draw(st.sampled_from(["sliding_attention", "full_attention"])) for _ in range(layers)]
    if config["model_type"] == "gpt_oss":
        config |= {"num_local_experts": draw(st.sampled_from([4, 8, 32])), "num_experts_per_tok": 2}
    return facts_from_config(config, source="hypothesis")


def _single_instance(memory_mib: int, gpus: int) -> GpuInstance:
    gpu = Gpu("test GPU", memory_mib, L4.compute_capability, fp8=True, bf16=True)
    return GpuInstance("g6.test", gpu, gpus, 8, 64, 100, 1.0, None)


def _spec(max_model_len: int, concurrency: int) -> tuple[FleetManifest, ModelSpec]:
    return _fleet(max_model_len=max_model_len, serving={"target_concurrency": concurrency})


@settings(max_examples=150, deadline=None)
@given(
    arch=architectures(),
    memory=st.integers(8_000, 200_000),
    extra=st.integers(1, 100_000),
    max_model_len=st.sampled_from([512, 2048, 8192, 32768]),
)
def test_more_memory_never_lowers_max_concurrency(arch, memory, extra, max_model_len) -> None:
    fleet, spec = _spec(max_model_len, 1)
    try:
        smaller = plan_model(fleet, spec, arch, catalog=[_single_instance(memory, 1)])
    except PlanError:
        assume(False)
    larger = plan_model(fleet, spec, arch, catalog=[_single_instance(memory + extra, 1)])
    assert larger.memory.max_concurrency >= smaller.memory.max_concurrency
    assert larger.memory.token_capacity >= smaller.memory.token_capacity


@settings(max_examples=150, deadline=None)
@given(
    arch=architectures(),
    memory=st.integers(8_000, 200_000),
    gpus=st.sampled_from([1, 2, 4, 8]),
    max_model_len=st.sampled_from([512, 4096, 32768]),
    concurrency=st.integers(1, 64),
)
def test_a_plan_never_exceeds_gpu_memory_and_tp_divides_heads(arch, memory, gpus, max_model_len, concurrency) -> None:
    fleet, spec = _spec(max_model_len, concurrency)
    try:
        plan = plan_model(fleet, spec, arch, catalog=[_single_instance(memory, gpus)])
    except PlanError:
        assume(False)
    m = plan.memory
    used = m.weights_bytes_per_gpu + m.lora_bytes_per_gpu + m.activation_bytes_per_gpu + m.reserve_bytes_per_gpu
    assert used + m.kv_cache_bytes_per_gpu <= plan.gpu_memory_bytes
    assert m.kv_blocks * m.kv_block_bytes <= m.kv_cache_bytes_per_gpu
    assert m.max_concurrency * m.kv_blocks_per_request <= m.kv_blocks
    assert m.max_concurrency >= concurrency
    assert arch.num_attention_heads % plan.tensor_parallel_size == 0
    assert plan.tensor_parallel_size <= gpus


def test_chunked_attention_with_an_eagle_drafter_is_planned_without_the_hybrid_manager() -> None:
    """vLLM disables its hybrid KV manager for Llama-4's chunked layers under EAGLE: every
    layer then holds the full context, so fewer requests fit."""
    config = json.loads((REPO / "tests/data/hf_configs/meta-llama__Llama-4-Scout-17B-16E-Instruct.json").read_text())
    arch = facts_from_config({k: v for k, v in config.items() if not k.startswith("_")}, source="scout")
    base = {"name": "m", "architecture": "meta-llama/Llama-4-Scout-17B-16E-Instruct", "source": "s3://llmfleet-store/models/m",
            "max_model_len": 131072, "serving": {"instance_type": "p5e.48xlarge", "target_concurrency": 1}}
    fleet = FleetManifest.model_validate({"name": "f", "models": [base]})
    plain = plan_model(fleet, fleet.models[0], arch)
    eagle = {**base, "speculative": {"method": "eagle", "model": "some/eagle-head"}}
    fleet = FleetManifest.model_validate({"name": "f", "models": [eagle]})
    assert plan_model(fleet, fleet.models[0], arch).memory.max_concurrency < plain.memory.max_concurrency


def test_a_multimodal_checkpoint_served_as_text_leaves_the_vision_encoder_out() -> None:
    config = json.loads((REPO / "tests/data/hf_configs/Qwen__Qwen2.5-VL-7B-Instruct.json").read_text())
    arch = facts_from_config({k: v for k, v in config.items() if not k.startswith("_")}, source="qwen-vl")
    base = {"name": "m", "source": "s3://llmfleet-store/models/m", "max_model_len": 32768, "serving": {"instance_type": "g6e.xlarge"}}
    with_images = plan_model(*_one({**base}), arch)
    text = plan_model(*_one({**base, "language_model_only": True}), arch)
    assert with_images.memory.weights_bytes - text.memory.weights_bytes == 2 * arch.parameters.vision
    assert text.memory.activation_bytes_per_gpu < with_images.memory.activation_bytes_per_gpu  # no encoder cache
    assert text.vllm.language_model_only and "--language-model-only" in vllm_argv(text.vllm, model="/m")
    with pytest.raises(PlanError, match="field 'language_model_only': qwen3 has no vision encoder"):
        plan_model(*_one({**base, "language_model_only": True}), known_architecture("Qwen/Qwen3-8B"))


def _one(model: dict) -> tuple[FleetManifest, ModelSpec]:
    fleet = FleetManifest.model_validate({"name": "f", "models": [model]})
    return fleet, fleet.models[0]
