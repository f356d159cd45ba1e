"""Weight formats read from quantization_config as llm-compressor, AutoAWQ, GPTQ, ModelOpt and
OpenAI write them; bytes per weight include scales and zero points."""

from __future__ import annotations

import pytest

from llmfleet.model_store.facts.families import ConfigError
from llmfleet.model_store.facts.families.quantization import checkpoint_format, QUANTIZABLE


def _ct(weights: dict, activations: dict | None = None, targets=("Linear",), ignore=("lm_head",), fmt="float-quantized") -> dict:
    group = {"weights": weights, "input_activations": activations, "targets": list(targets), "format": fmt}
    return {"quantization_config": {"quant_method": "compressed-tensors", "config_groups": {"group_0": group}, "ignore": list(ignore), "format": fmt}}


FP8_DYNAMIC = _ct({"num_bits": 8, "type": "float", "strategy": "channel", "symmetric": True}, {"num_bits": 8, "type": "float", "strategy": "token", "dynamic": True})
W4A16 = _ct({"num_bits": 4, "type": "int", "strategy": "group", "group_size": 128, "symmetric": True}, None, fmt="pack-quantized")
W8A8_INT8 = _ct({"num_bits": 8, "type": "int", "strategy": "channel", "symmetric": True}, {"num_bits": 8, "type": "int", "strategy": "token", "dynamic": True}, fmt="int-quantized")
NVFP4 = _ct({"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16}, {"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16}, fmt="nvfp4-pack-quantized")


@pytest.mark.parametrize(
    ("config", "scheme", "per_weight", "capability"),
    [
        (FP8_DYNAMIC, "W8A8 FP8", 1.0, 8.9),
        (W4A16, "W4A16 g128", 0.5 + 2 / 128, 7.5),
        (W8A8_INT8, "W8A8 INT8", 1.0, 7.5),
        (NVFP4, "NVFP4 W4A4", 0.5 + 1 / 16, 10.0),
    ],
)
def test_compressed_tensors_schemes(config: dict, scheme: str, per_weight: float, capability: float) -> None:
    fmt = checkpoint_format(config)
    assert (fmt.method, fmt.scheme, fmt.min_capability, fmt.covers) == ("compressed-tensors", scheme, capability, QUANTIZABLE)
    assert fmt.bytes_per_weight == pytest.approx(per_weight)


def test_mixed_precision_groups_keep_their_own_widths() -> None:
    config = _ct({"num_bits": 8, "type": "float", "strategy": "block"}, {"num_bits": 8, "type": "float"}, targets=["re:.*self_attn.*"])
    config["quantization_config"]["config_groups"]["group_1"] = {
        "weights": {"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16},
        "targets": ["re:.*mlp.experts.*"],
    }
    parts = checkpoint_format(config).part_bytes()
    assert parts == {"attention": 1.0, "experts": pytest.approx(0.5625)}


def test_ignored_attention_stays_16_bit() -> None:
    config = _ct({"num_bits": 8, "type": "float", "strategy": "channel"}, None, ignore=["lm_head", "re:.*self_attn.*"])
    assert "attention" not in checkpoint_format(config).covers


def test_awq_gptq_mxfp4_fp8_block_and_modelopt() -> None:
    awq = checkpoint_format({"quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True}})
    assert awq.bytes_per_weight == pytest.approx(0.5 + 2.5 / 128) and awq.min_capability == 7.5
    gptq = checkpoint_format({"quantization_config": {"quant_method": "gptq", "bits": 8, "group_size": 32}})
    assert gptq.bytes_per_weight == pytest.approx(1 + 3 / 32) and gptq.min_capability == 6.0
    oss = checkpoint_format({"quantization_config": {"quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.self_attn"]}})
    assert oss.covers == frozenset({"experts"}) and oss.bytes_per_weight == pytest.approx(0.53125)
    block = checkpoint_format({"quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}})
    assert block.bytes_per_weight == pytest.approx(1 + 4 / 16384)
    nvfp4 = checkpoint_format({"quantization_config": {"quant_method": "modelopt", "quant_algo": "NVFP4"}})
    assert (nvfp4.method, nvfp4.min_capability) == ("modelopt_fp4", 10.0)
    fp8 = checkpoint_format({"quantization_config": {"quant_method": "modelopt", "quantization": {"quant_algo": "FP8"}}})
    assert fp8.method == "modelopt" and fp8.bytes_per_weight == 1.0
    assert checkpoint_format({}) is None


@pytest.mark.parametrize(
    ("quant", "fragment"),
    [
        ({"quant_method": "modelopt", "quant_algo": "MIXED_PRECISION"}, "quant_algo 'MIXED_PRECISION' is not modelled"),
        ({"quant_method": "awq", "bits": 5}, "quantization_config.bits 5 is not modelled"),
        ({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {"num_bits": "8", "type": "int"}}}}, "config_groups.g.weights.num_bits must be an integer"),
        ({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": "fp8"}}}, "config_groups.g.weights must be an object"),
        ({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {"num_bits": 8, "type": "int", "strategy": "group", "group_size": "128"}}}}, "group_size must be an integer"),
        ({"quant_method": "fp8", "weight_block_size": [0, 128]}, "weight_block_size must be [rows, cols] of positive sizes"),
        ({"quant_method": "fp8", "weight_block_size": ["128", "128"]}, "weight_block_size must be a list of integers"),
        ({"quant_method": "modelopt", "quantization": "NVFP4"}, "quantization_config.quantization must be an object"),
        ({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {"num_bits": 2, "type": "int"}, "targets": ["Linear"]}}}, "2-bit int"),
        ({"quant_method": "quark"}, "quant_method 'quark' is not modelled"),
    ],
)
def test_unmodelled_formats_are_refused_naming_the_key(quant: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match="^cfg: .*") as caught:
        checkpoint_format({"quantization_config": quant}, "cfg")
    assert fragment in str(caught.value)
