"""Adapter validation: what a LoRA adapter directory must be before a byte of it is stored.

vLLM's `load_lora_adapter` does not check an adapter's base model (vllm #34186) and a
pickle file runs code when loaded, so this check is the guard between a training run and
the fleet. It reads only the directory (and the safetensors *header*, never the weights
into memory); every refusal is an `AdapterRejected` naming its rule, the value and what
is allowed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError, safe_open

from llmfleet.model_store.facts.architectures import ArchitectureFacts
from llmfleet.model_store.errors import EXIT_REFUSED, LlmfleetError
from llmfleet.model_store.contract.manifest import DNS_LABEL, FleetManifest, ModelSpec, SAFE_SEGMENT

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"

# Used when no fleet manifest lists the model; 64 is the largest rank common
# fine-tuning recipes use and keeps vLLM's LoRA buffers modest.
DEFAULT_MAX_RANK = 64

# Extensions of formats that unpickle (run code) when loaded: torch.save, pickle, joblib.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")
# What transformers' Trainer (and trl's trainers) leave in an output directory beside the
# adapter: its pickled TrainingArguments and intermediate checkpoints. Never served, so a
# training run's output directory publishes as is and these are left out, never uploaded.
TRAINER_LEFTOVERS = re.compile(r"training_args\.bin|checkpoint-\d+")
# Bounds: a save_pretrained() directory holds a handful of small files beside the weights.
MAX_FILES = 32
MAX_CONFIG_BYTES = 1 << 20  # adapter_config.json
MAX_OTHER_FILE_BYTES = 64 << 20  # README, tokenizer and chat-template files
# Beyond rank 512 (vLLM's largest) on all linear modules of a 70B model (~13 GiB in bf16).
MAX_WEIGHTS_BYTES = 16 << 30

# Floating-point dtypes LoRA weights are trained and served in.
ALLOWED_DTYPES = ("F16", "BF16", "F32")

# Features vLLM refuses when loading an adapter (vllm/lora/peft_helper.py, v0.32, 2026-10).
UNSUPPORTED_FEATURES = {
    "use_dora": "DoRA",
    "lora_bias": "LoRA bias",
    "layer_replication": "layer replication",
    "alora_invocation_tokens": "Activated LoRA (aLoRA)",
    "modules_to_save": "modules_to_save (full copies of base modules)",
}

# adapter_config.json fields vLLM reads (vllm/lora/peft_helper.py, mirroring peft's
# LoraConfig) and the JSON types each may hold; a wrong type fails only when vLLM loads it.
_NUMBER = (int, float)
CONFIG_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "r": (int,),
    "lora_alpha": _NUMBER,
    "lora_dropout": _NUMBER,
    "target_modules": (list, str),
    "base_model_name_or_path": (str,),
    "bias": (str,),
    "fan_in_fan_out": (bool,),
    "use_rslora": (bool,),
    "rank_pattern": (dict,),
    "alpha_pattern": (dict,),
    "task_type": (str,),
}

_TYPE_NAMES = {int: "an integer", float: "a number", list: "a list", str: "a string", bool: "true/false", dict: "an object"}

# peft's key for a LoRA factor: base_model.model.<module path>.lora_A|lora_B.weight.
_LORA_KEY = re.compile(r"^base_model\.model\.(?P<path>.+)\.(?P<factor>lora_[AB])\.weight$")
_LAYER_INDEX = re.compile(r"(?:^|\.)layers\.(\d+)\.")


class AdapterRejected(LlmfleetError, ValueError):
    """An adapter that must not reach the fleet; `.rule` is a short id such as "rank".

    Also a ValueError: an unsafe name (`check_segment`) is a bad value to its callers."""

    exit_code = EXIT_REFUSED

    def __init__(self, rule: str, message: str):
        super().__init__(f"adapter rejected [{rule}]: {message}")
        self.rule = rule


@dataclass(frozen=True)
class AdapterInfo:
    """What validation learned about an adapter; recorded in the version's manifest."""

    base_model: str
    rank: int
    target_modules: tuple[str, ...]
    files: tuple[str, ...]
    tensor_count: int
    weights_bytes: int
    left_out: tuple[str, ...] = ()  # trainer leftovers in the directory, not published


def check_segment(kind: str, value: str, *, rule: str = "name", pattern: str = SAFE_SEGMENT) -> str:
    """Refuse a name that is not one safe S3 key segment (no '/', '..', spaces, control chars)."""
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        raise AdapterRejected(rule, f"{kind} {value!r:.80} is not a safe path segment; allowed: {pattern}")
    return value


def file_size_limit(name: str) -> int:
    """The most bytes an adapter's file may hold: publish checks it, and servers check the
    sizes a stored manifest claims against it before downloading."""
    return {ADAPTER_CONFIG: MAX_CONFIG_BYTES, ADAPTER_WEIGHTS: MAX_WEIGHTS_BYTES}.get(name, MAX_OTHER_FILE_BYTES)


def check_model_name(model: str) -> str:
    return check_segment("model name", model, rule="model", pattern=DNS_LABEL)


def max_rank_for(fleet: FleetManifest | None, model: str) -> int:
    """The rank ceiling: the fleet's `lora.max_rank` when it lists the model, else DEFAULT_MAX_RANK.

    A listed model without a `lora` section is served without `--enable-lora`, so no
    adapter for it could ever load.
    """
    spec = _listed(fleet, model)
    if spec is None:
        return DEFAULT_MAX_RANK
    if spec.lora is None:
        raise AdapterRejected("lora", f"fleet {fleet.name!r} serves model {model!r} without a 'lora' section; add one")
    return spec.lora.max_rank


def accepted_bases_for(fleet: FleetManifest | None, model: str, *extra: str) -> tuple[str, ...]:
    """Names an adapter's base_model_name_or_path may carry: the model's name, its source and aliases."""
    names = [model, *extra]
    spec = _listed(fleet, model)
    if spec is not None:
        names += [spec.source, *spec.aliases]
    return tuple(dict.fromkeys(n.rstrip("/") for n in names if n))


def _listed(fleet: FleetManifest | None, model: str) -> ModelSpec | None:
    if fleet is None:
        return None
    return next((spec for spec in fleet.models if spec.name == model), None)


def validate_adapter(
    directory: str | Path,
    *,
    model_name: str,
    accepted_bases: tuple[str, ...] | list[str],
    max_rank: int,
    arch: ArchitectureFacts,
) -> AdapterInfo:
    """Check a peft LoRA output directory against the base model; raise AdapterRejected on the first fault."""
    directory = Path(directory)
    if not directory.is_dir():
        raise AdapterRejected("missing_file", f"{directory} is not a directory")
    files, left_out = _check_layout(directory)
    config = _read_config(directory / ADAPTER_CONFIG)
    _check_field_types(config)
    _check_features(config)
    base = _check_base(config, model_name, accepted_bases)
    rank = _check_rank(config, max_rank)
    shapes = arch.linear_shapes()
    targets = _check_targets(config, shapes)
    weights = directory / ADAPTER_WEIGHTS
    tensor_count = _check_tensors(weights, config, rank, max_rank, shapes, arch.num_layers)
    return AdapterInfo(
        base_model=base,
        rank=rank,
        target_modules=targets,
        files=tuple(files),
        left_out=tuple(left_out),
        tensor_count=tensor_count,
        weights_bytes=weights.stat().st_size,
    )


def _check_layout(directory: Path) -> tuple[list[str], list[str]]:
    """(files to publish, trainer leftovers to leave out)."""
    left_out = sorted(p.name for p in directory.iterdir() if TRAINER_LEFTOVERS.fullmatch(p.name) and not p.is_symlink())
    entries = sorted(p for p in directory.iterdir() if p.name not in left_out)
    if len(entries) > MAX_FILES:
        raise AdapterRejected("size", f"{directory} holds {len(entries)} entries; at most {MAX_FILES} allowed")
    names = []
    for entry in entries:
        check_segment("file name", entry.name, rule="file_name")
        if entry.is_symlink():
            raise AdapterRejected("symlink", f"{entry.name} is a symbolic link; publish regular files only")
        if entry.name.lower().endswith(PICKLE_SUFFIXES):
            raise AdapterRejected(
                "pickle",
                f"{entry.name} is a pickle-based file (runs code when loaded); only safetensors weights are allowed",
            )
        if not entry.is_file():
            raise AdapterRejected(
                "layout", f"{entry.name} is a directory; publish the directory save_pretrained() wrote (files only)"
            )
        limit = file_size_limit(entry.name)
        size = entry.stat().st_size
        if size > limit:
            raise AdapterRejected("size", f"{entry.name} is {size} bytes; at most {limit} allowed")
        names.append(entry.name)
    for required in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if required not in names:
            raise AdapterRejected("missing_file", f"{directory} has no {required} (peft's save_pretrained writes one)")
    return names, left_out


def _read_config(path: Path) -> dict:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdapterRejected("config", f"{ADAPTER_CONFIG} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise AdapterRejected("config", f"{ADAPTER_CONFIG} must hold a JSON object, got {type(config).__name__}")
    peft_type = config.get("peft_type")
    if peft_type != "LORA":
        raise AdapterRejected("peft_type", f"peft_type {peft_type!r} is not served; allowed: 'LORA'")
    return config


def _check_field_types(config: dict) -> None:
    for key, allowed in CONFIG_FIELD_TYPES.items():
        value = config.get(key)
        if value is None:
            continue
        wrong_bool = isinstance(value, bool) and bool not in allowed  # JSON true is no number
        if wrong_bool or not isinstance(value, allowed):
            names = " or ".join(_TYPE_NAMES[t] for t in allowed)
            raise AdapterRejected("config", f"{ADAPTER_CONFIG}: {key} must be {names}, got {value!r}")


def _check_features(config: dict) -> None:
    for key, feature in UNSUPPORTED_FEATURES.items():
        if config.get(key):
            raise AdapterRejected(
                "feature", f"{key}={config[key]!r}: vLLM does not serve {feature}; allowed: unset/false"
            )


def _check_base(config: dict, model_name: str, accepted_bases: tuple[str, ...] | list[str]) -> str:
    base = config.get("base_model_name_or_path")
    accepted = tuple(dict.fromkeys([model_name, *accepted_bases]))
    if not isinstance(base, str) or base.rstrip("/") not in accepted:
        raise AdapterRejected(
            "base_model",
            f"base_model_name_or_path {base!r} is not model {model_name!r}; accepted: {list(accepted)} "
            "(add the training path to the model's 'aliases' in the fleet manifest)",
        )
    return base


def _check_rank(config: dict, max_rank: int) -> int:
    rank = config.get("r")
    pattern = config.get("rank_pattern") or {}
    if not isinstance(pattern, dict):
        raise AdapterRejected("rank", f"rank_pattern must be an object, got {pattern!r}")
    for where, value in [("r", rank), *((f"rank_pattern[{k!r}]", v) for k, v in pattern.items())]:
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise AdapterRejected("rank", f"{where} = {value!r}; a positive integer is required")
        if value > max_rank:
            raise AdapterRejected("rank", f"{where} = {value} exceeds the model's lora.max_rank {max_rank}")
    return rank


def _check_targets(config: dict, shapes: dict[str, tuple[int, int]]) -> tuple[str, ...]:
    targets = config.get("target_modules")
    if targets == "all-linear":
        return tuple(shapes)
    if isinstance(targets, str):
        try:
            re.compile(targets)
        except re.error as exc:
            raise AdapterRejected(
                "target_modules", f"target_modules regex {targets!r} does not compile: {exc}"
            ) from None
        # peft matches a regex against full module names: the tensors below show what it hit.
        return (targets,)
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
        raise AdapterRejected("target_modules", f"target_modules {targets!r} must be a non-empty list of module names")
    unknown = [t for t in targets if t.rsplit(".", 1)[-1] not in shapes]
    if unknown:
        raise AdapterRejected(
            "target_modules", f"target_modules {unknown} do not exist in this architecture; allowed: {sorted(shapes)}"
        )
    return tuple(targets)


def _check_tensors(
    path: Path, config: dict, rank: int, max_rank: int, shapes: dict[str, tuple[int, int]], num_layers: int
) -> int:
    try:
        with safe_open(path, framework="numpy") as weights:
            slices = {name: weights.get_slice(name) for name in weights.keys()}  # noqa: SIM118 - not a mapping
            header = {name: (tuple(view.get_shape()), view.get_dtype()) for name, view in slices.items()}
    except SafetensorError as exc:
        raise AdapterRejected("safetensors", f"{ADAPTER_WEIGHTS} does not parse as safetensors: {exc}") from None
    if not header:
        raise AdapterRejected("safetensors", f"{ADAPTER_WEIGHTS} holds no tensors")
    ranks_allowed = {rank, *(config.get("rank_pattern") or {}).values()}
    factors: dict[str, dict[str, tuple[int, ...]]] = {}
    for name, (shape, dtype) in header.items():
        match = _LORA_KEY.match(name)
        if match is None:
            raise AdapterRejected(
                "tensor_name", f"tensor {name!r} is not a LoRA factor (base_model.model.<module>.lora_A|lora_B.weight)"
            )
        module_path, factor = match["path"], match["factor"]
        module = module_path.rsplit(".", 1)[-1]
        if module not in shapes:
            raise AdapterRejected(
                "target_modules",
                f"tensor {name!r} targets {module!r}, not in this architecture; allowed: {sorted(shapes)}",
            )
        layer = _LAYER_INDEX.search(module_path + ".")
        if layer is None or int(layer[1]) >= num_layers:
            raise AdapterRejected(
                "tensor_name", f"tensor {name!r} names no layer in 0..{num_layers - 1} of the base model"
            )
        if dtype not in ALLOWED_DTYPES:
            raise AdapterRejected("dtype", f"tensor {name!r} has dtype {dtype}; allowed: {list(ALLOWED_DTYPES)}")
        factors.setdefault(module_path, {})[factor] = shape
    for module_path, pair in factors.items():
        in_features, out_features = shapes[module_path.rsplit(".", 1)[-1]]
        if set(pair) != {"lora_A", "lora_B"}:
            raise AdapterRejected("shape", f"{module_path} has only {sorted(pair)}; LoRA needs lora_A and lora_B")
        module_rank = pair["lora_A"][0] if len(pair["lora_A"]) == 2 else None
        expected_a, expected_b = (module_rank, in_features), (out_features, module_rank)
        if module_rank not in ranks_allowed or pair["lora_A"] != expected_a or pair["lora_B"] != expected_b:
            raise AdapterRejected(
                "shape",
                f"{module_path}: lora_A {list(pair['lora_A'])}, lora_B {list(pair['lora_B'])}; expected "
                f"lora_A [r, {in_features}] and lora_B [{out_features}, r] "
                f"with r in {sorted(ranks_allowed)} (<= {max_rank})",
            )
    return len(header)


__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_WEIGHTS",
    "DEFAULT_MAX_RANK",
    "AdapterInfo",
    "AdapterRejected",
    "accepted_bases_for",
    "check_model_name",
    "check_segment",
    "file_size_limit",
    "max_rank_for",
    "validate_adapter",
]
