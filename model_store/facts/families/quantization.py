"""Weight formats: a checkpoint's `quantization_config` (or the manifest's online method) as
bytes per weight, which layers it covers, and the GPUs it is planned on. Pure.

Minimum compute capabilities are vLLM's own (`get_min_capability()` of each method's config
class in `vllm/model_executor/layers/quantization/`, 0.26 and 0.32, read 2026-12), with one
policy on top: FP8 and NVFP4 formats are planned only where the GPU has FP8 (8.9) or FP4
(10.0, Blackwell) tensor cores. Below that vLLM falls back to weight-only Marlin kernels
(min 7.5) that keep the memory saving but not the speed. gpt-oss's MXFP4 is the exception:
its Triton (Hopper) and Marlin (Ampere) MoE kernels are the reference path (Mxfp4Config: 80).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from llmfleet.model_store.facts.families.config import ConfigError, ConfigView

# Layer groups a weight format may cover (see facts.ParameterCounts).
QUANTIZABLE = frozenset({"attention", "dense_mlp", "experts", "shared_experts"})
# A 16-bit scale per group (AWQ/GPTQ/compressed-tensors group strategy) and a packed zero.
SCALE_BYTES = 2


@dataclass(frozen=True)
class WeightFormat:
    """How quantized weights are stored in GPU memory, per parameter group."""

    method: str  # vLLM's name (`--quantization`, or what it detects from the checkpoint)
    scheme: str  # human name: "FP8-dynamic", "W4A16 g128", "MXFP4", ...
    bytes_per_weight: float  # incl. scales and zero points, per covered parameter
    min_capability: float  # CUDA compute capability vLLM's kernels for it need
    covers: frozenset[str] = field(default=QUANTIZABLE)  # parameter groups stored this way
    online: bool = False  # quantized by vLLM at load time (the checkpoint is 16-bit)
    # Groups stored at other widths than bytes_per_weight (mixed-precision checkpoints).
    overrides: tuple[tuple[str, float], ...] = ()

    def part_bytes(self) -> dict[str, float]:
        """Bytes per weight of every group the format stores quantized."""
        return {part: self.bytes_per_weight for part in self.covers} | dict(self.overrides)

    def describe(self) -> str:
        parts = self.part_bytes()
        if len(set(parts.values())) > 1:
            return f"{self.method} {self.scheme}, " + ", ".join(f"{p} {b:.3f} B/weight" for p, b in sorted(parts.items()))
        where = "" if self.covers == QUANTIZABLE else f" on {'+'.join(sorted(self.covers))}"
        return f"{self.method} {self.scheme}{where}, {self.bytes_per_weight:.3f} B/weight"


def _int_group(bits: int, group_size: int | None, zero_point: bool) -> float:
    """Bytes per weight of an integer format with a 16-bit scale (and packed zero) per group."""
    if not group_size or group_size <= 0:  # per channel: scales are negligible
        return bits / 8
    zero = bits / 8 if zero_point else 0
    return bits / 8 + (SCALE_BYTES + zero) / group_size


# Online quantization the manifest may ask for (a 16-bit checkpoint quantized at load time).
ONLINE_FORMATS = {
    "fp8": WeightFormat("fp8", "FP8 per-tensor (online)", 1.0, 8.9, online=True),
}

# Groups a `modules_to_not_convert` / `ignore` entry keeps in 16 bit, by the words in it.
_IGNORE_WORDS = {
    "attention": ("self_attn", "attn", "attention"),
    "experts": ("experts",),
    "shared_experts": ("shared_expert",),
    "dense_mlp": ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"),
}


# A module of each group as DeepSeek- and Qwen-style checkpoints name it, for `re:` entries:
# compressed-tensors matches those against module names (re.match), so they are tried here
# on these names rather than read for words ("re:.*shared_experts.*" leaves routed experts
# quantized; "re:.*mlp\.(gate|up|down)_proj.*" names the dense MLP).
_GROUP_MODULES = {
    "attention": "model.layers.1.self_attn.q_proj",
    "experts": "model.layers.1.mlp.experts.0.gate_proj",
    "shared_experts": "model.layers.1.mlp.shared_experts.gate_proj",
    "dense_mlp": "model.layers.0.mlp.gate_proj",
}


def _regex_groups(quant: ConfigView, key: str, entry: str) -> set[str]:
    """Groups whose module an `re:` entry matches."""
    try:
        pattern = re.compile(entry[3:])
    except re.error as exc:
        raise quant.error(key, f"entry {entry!r} is not a regular expression ({exc})") from None
    return {group for group, name in _GROUP_MODULES.items() if pattern.match(name)}


def _uncovered_by(quant: ConfigView, key: str) -> frozenset[str]:
    """Groups that `ignore`/`modules_to_not_convert` entries leave in 16 bit."""
    kept = set()
    for entry in quant.str_list(key) or []:
        matched = _regex_groups(quant, key, entry) if entry.startswith("re:") else set()
        if matched:
            kept |= matched
            continue
        for group, words in _IGNORE_WORDS.items():
            # "model.layers.0.self_attn" ignores one layer, not the group; a bare "lm_head" or
            # router gate ignores nothing the format covers anyway.
            if any(word in entry for word in words) and not re.search(r"layers\.\d+\.", entry):
                kept.add(group)
    return frozenset(kept)


# A compressed-tensors group's `targets` -> the parameter groups it quantizes: "Linear" is
# every linear layer; a regex names attention, experts, shared experts or MLP projections
# (which, unqualified, match dense, routed and shared MLPs alike).
_ATTENTION_WORDS = ("attn", "attention", "q_proj", "kv_proj", "o_proj", "wq", "wkv", "wo_")
_MLP_WORDS = ("mlp", "ffn", "gate_proj", "up_proj", "down_proj", "w1", "w2", "w3")
_MLP_PARTS = frozenset({"dense_mlp", "experts", "shared_experts"})


def _target_parts(targets: list[str] | None) -> frozenset[str]:
    parts: set[str] = set()
    for target in targets or ["Linear"]:
        text = str(target)
        if text == "Linear":
            return QUANTIZABLE
        if any(word in text for word in _ATTENTION_WORDS):
            parts.add("attention")
        if "shared_expert" in text:
            parts.add("shared_experts")
        elif "experts" in text:
            parts.add("experts")
        elif any(word in text for word in _MLP_WORDS):
            parts |= _MLP_PARTS
    return frozenset(parts)


def _ct_scheme(bits: int, kind: str, group_size: int | None, act_bits: int | None, symmetric: bool, where: str) -> tuple[str, float, float]:
    """(scheme, bytes per weight, min compute capability) of one compressed-tensors group."""
    if kind == "float" and bits == 8:
        return f"W8A{act_bits or 16} FP8", 1.0, 8.9
    if kind == "float" and bits == 4 and group_size == 32:  # MXFP4: an e8m0 scale per 32
        return f"MXFP4 W4A{act_bits or 16}", 0.5 + 1 / 32, 8.0
    if kind == "float" and bits == 4:  # NVFP4: e2m1 values, an fp8 scale per 16, a global scale
        return f"NVFP4 W4A{act_bits or 16}", 0.5 + 1 / (group_size or 16), 10.0
    if kind == "int" and bits == 8:
        return f"W8A{act_bits or 16} INT8", 1.0, 7.5
    if kind == "int" and bits == 4:
        return f"W4A{act_bits or 16}" + (f" g{group_size}" if group_size else ""), _int_group(4, group_size, not symmetric), 7.5
    raise ConfigError(f"{where}: compressed-tensors scheme with {bits}-bit {kind} weights is not modelled")


def _group_size(weights: ConfigView) -> int | None:
    """A group strategy's group size; None for channel/tensor/block strategies or -1."""
    if weights.raw("strategy") not in ("group", "tensor_group"):
        return None
    size = weights.int("group_size", None, minimum=-1)
    return size if size and size > 0 else None


def _compressed_tensors(quant: ConfigView) -> WeightFormat:
    groups = quant.child("config_groups")
    if groups is None or not groups.data:
        raise quant.error("config_groups", "is missing (compressed-tensors needs it)")
    ignored = _uncovered_by(quant, "ignore")
    per_part: dict[str, tuple[str, float, float]] = {}
    for name in groups.data:
        group = groups.child(name) or ConfigView({}, groups.where, f"{groups.prefix}{name}.")
        weights = group.child("weights") or ConfigView({}, group.where, f"{group.prefix}weights.")
        kind = weights.raw("type")
        if kind not in ("int", "float"):
            raise weights.error("type", f"must be 'int' or 'float', got {kind!r}")
        activations = group.child("input_activations")
        act_bits = activations.int("num_bits", None) if activations else None
        scheme = _ct_scheme(weights.int("num_bits"), kind, _group_size(weights), act_bits, weights.bool("symmetric", True), quant.where)
        for part in _target_parts(group.str_list("targets")) - ignored:
            per_part[part] = scheme
    if not per_part:
        raise quant.error("config_groups", "target no layer the planner knows")
    widest = max(per_part.values(), key=lambda s: s[1])
    return WeightFormat(
        "compressed-tensors",
        " + ".join(sorted({s[0] for s in per_part.values()})),
        widest[1],
        max(s[2] for s in per_part.values()),
        frozenset(per_part),
        overrides=tuple(sorted((part, s[1]) for part, s in per_part.items() if s[1] != widest[1])),
    )


def _awq_gptq(method: str, quant: ConfigView) -> WeightFormat:
    bits = quant.int("bits", None) or quant.int("w_bit", 4)
    if bits not in (2, 3, 4, 8):
        raise quant.error("bits", f"{bits} is not modelled (2, 3, 4, 8 are)")
    group_size = quant.int("group_size", None, minimum=-1) or quant.int("q_group_size", 128, minimum=-1)
    covers = QUANTIZABLE - _uncovered_by(quant, "modules_to_not_convert")
    # AutoGPTQConfig 60, AutoAWQConfig 75; both run Marlin kernels where supported.
    minimum = 6.0 if method == "gptq" else 7.5
    return WeightFormat(method, f"int{bits} g{group_size}", _int_group(bits, group_size, True), minimum, covers)


def _modelopt(quant: ConfigView) -> WeightFormat:
    inner = quant.child("quantization") or quant  # hf_quant_config.json nests it
    algo = str(inner.raw("quant_algo", "")).upper()
    covers = QUANTIZABLE - _uncovered_by(inner, "exclude_modules")
    if algo == "FP8":
        return WeightFormat("modelopt", "FP8", 1.0, 8.9, covers)
    if algo == "NVFP4":
        return WeightFormat("modelopt_fp4", "NVFP4", 0.5 + 1 / 16, 10.0, covers)
    raise inner.error("quant_algo", f"{algo or None!r} is not modelled (FP8, NVFP4 are)")


def _fp8(quant: ConfigView) -> WeightFormat:
    block = quant.int_list("weight_block_size")
    if block is not None and (len(block) != 2 or min(block) < 1):
        raise quant.error("weight_block_size", f"must be [rows, cols] of positive sizes, got {block!r}")
    # Block-wise scales are fp32, one per block (DeepSeek-V3: 128 x 128).
    per_weight = 1.0 + (4 / (block[0] * block[1]) if block else 0)
    scheme = f"FP8 block {block[0]}x{block[1]}" if block else "FP8"
    return WeightFormat("fp8", scheme, per_weight, 8.9, QUANTIZABLE - _uncovered_by(quant, "modules_to_not_convert"))


def checkpoint_format(config: dict, where: str = "config.json") -> WeightFormat | None:
    """The weight format of a pre-quantized checkpoint, from its quantization_config; None if 16-bit.

    Raises ConfigError naming the key for a method or scheme the planner cannot size.
    """
    if config.get("quantization_config") is None:
        return None
    if not isinstance(config["quantization_config"], dict):
        raise ConfigError(f"{where}: quantization_config must be an object, got {type(config['quantization_config']).__name__}")
    quant = ConfigView(config["quantization_config"], where, "quantization_config.")
    method = str(quant.raw("quant_method", "")).lower()
    if method == "fp8":
        return _fp8(quant)
    if method == "compressed-tensors":
        return _compressed_tensors(quant)
    if method in ("awq", "gptq"):
        return _awq_gptq(method, quant)
    if method == "mxfp4":
        # gpt-oss: MoE experts in MXFP4 (e2m1 + an e8m0 scale per 32); attention, router,
        # embeddings stay bf16.
        return WeightFormat("mxfp4", "MXFP4 experts", 0.5 + 1 / 32, 8.0, frozenset({"experts"}))
    if method in ("modelopt", "modelopt_fp4"):
        return _modelopt(quant)
    if method == "bitsandbytes":
        return WeightFormat("bitsandbytes", "bitsandbytes", 0.5, 7.5)  # refused by the planner with alternatives
    raise ConfigError(
        f"{where}: quantization_config.quant_method {method or None!r} is not modelled; "
        "modelled: fp8, compressed-tensors, awq, gptq, mxfp4, modelopt (FP8, NVFP4)"
    )
