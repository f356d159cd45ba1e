"""Model-architecture facts: what the planner and adapter validation need from config.json.

Facts come from a checkpoint's own `config.json` (local directory or the store) or, for
models that cannot be fetched here, from `known_configs/` — copies of public config.json
files with their source named in `_source`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from model_store.manifest import ManifestError, ModelSpec

KNOWN_CONFIGS = Path(__file__).parent / "known_configs"

# Architectures whose attention projections carry a bias (HF modeling code, 2026-10).
_QKV_BIAS = {"qwen2"}
# Architectures with per-head RMSNorm on q and k (Qwen3 modeling code).
_QK_NORM = {"qwen3", "qwen3_moe"}

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "fp8": 1, "int8": 1}

# quantization_config.quant_method -> the manifest's quantization names.
_QUANT_METHODS = {
    "awq": "awq",
    "gptq": "gptq",
    "fp8": "fp8",
    "bitsandbytes": "bitsandbytes",
}


@dataclass(frozen=True)
class ArchitectureFacts:
    """The numbers of a causal LM that memory planning and LoRA shape checks need."""

    model_type: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool
    max_position_embeddings: int
    checkpoint_dtype: str
    num_experts: int = 1
    checkpoint_quantization: str | None = None
    checkpoint_bytes: int | None = None  # safetensors index total_size, when known
    source: str = ""

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 1

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each LoRA-targetable linear module, by short name."""
        q_out = self.num_attention_heads * self.head_dim
        kv_out = self.num_kv_heads * self.head_dim
        shapes = {
            "q_proj": (self.hidden_size, q_out),
            "k_proj": (self.hidden_size, kv_out),
            "v_proj": (self.hidden_size, kv_out),
            "o_proj": (q_out, self.hidden_size),
        }
        if self.model_type == "mixtral":
            shapes |= {
                "w1": (self.hidden_size, self.intermediate_size),
                "w3": (self.hidden_size, self.intermediate_size),
                "w2": (self.intermediate_size, self.hidden_size),
            }
        else:
            shapes |= {
                "gate_proj": (self.hidden_size, self.intermediate_size),
                "up_proj": (self.hidden_size, self.intermediate_size),
                "down_proj": (self.intermediate_size, self.hidden_size),
            }
        return shapes

    def parameter_count(self) -> int:
        """Parameters computed from the shapes (embeddings, attention, MLP/experts, norms)."""
        h = self.hidden_size
        attention = sum(i * o for name, (i, o) in self.linear_shapes().items() if name.endswith(("q_proj", "k_proj", "v_proj", "o_proj")))
        if self.model_type in _QKV_BIAS:
            attention += (self.num_attention_heads + 2 * self.num_kv_heads) * self.head_dim
        norms = 2 * h + (2 * self.head_dim if self.model_type in _QK_NORM else 0)
        mlp = 3 * h * self.intermediate_size * self.num_experts
        router = h * self.num_experts if self.is_moe else 0
        per_layer = attention + norms + mlp + router
        embeddings = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return embeddings + self.num_layers * per_layer + h  # + final norm

    def embedding_parameter_count(self) -> int:
        """Parameters of input embeddings and LM head (kept in 16 bit by weight quantizers)."""
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)


def facts_from_config(config: dict, *, total_size: int | None = None, source: str = "") -> ArchitectureFacts:
    """Read ArchitectureFacts from a Hugging Face config.json dict.

    An explicit `head_dim` wins over hidden_size / num_attention_heads (Qwen3 and Mistral
    Small set one that differs). Missing required keys raise ManifestError naming them.
    """
    text_config = config.get("text_config", config)  # multimodal wrappers nest the LM
    required = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
    missing = [key for key in required if key not in text_config and key not in config]
    if missing:
        raise ManifestError(f"{source or 'config.json'}: missing keys {missing} needed for planning")

    def get(key: str, default=None):
        return text_config.get(key, config.get(key, default))

    heads = int(get("num_attention_heads"))
    quant = (config.get("quantization_config") or {}).get("quant_method")
    if quant is not None and quant not in _QUANT_METHODS:
        raise ManifestError(
            f"{source or 'config.json'}: quantization_config.quant_method {quant!r} is not supported; "
            f"allowed: {sorted(_QUANT_METHODS)}"
        )
    return ArchitectureFacts(
        model_type=str(get("model_type")),
        hidden_size=int(get("hidden_size")),
        intermediate_size=int(get("intermediate_size")),
        num_layers=int(get("num_hidden_layers")),
        num_attention_heads=heads,
        num_kv_heads=int(get("num_key_value_heads") or heads),
        head_dim=int(get("head_dim") or int(get("hidden_size")) // heads),
        vocab_size=int(get("vocab_size")),
        tie_word_embeddings=bool(get("tie_word_embeddings", False)),
        max_position_embeddings=int(get("max_position_embeddings", 4096)),
        checkpoint_dtype=str(get("torch_dtype") or get("dtype") or "bfloat16"),
        num_experts=int(get("num_local_experts") or get("num_experts") or 1),
        checkpoint_quantization=_QUANT_METHODS.get(quant) if quant else None,
        checkpoint_bytes=total_size,
        source=source,
    )


def known_architecture_ids() -> list[str]:
    return sorted(path.stem.replace("__", "/") for path in KNOWN_CONFIGS.glob("*.json"))


@cache
def known_architecture(hf_id: str) -> ArchitectureFacts:
    """Facts of a well-known model from the copies in known_configs/."""
    path = KNOWN_CONFIGS / (hf_id.replace("/", "__") + ".json")
    if not path.is_file():
        raise ManifestError(f"architecture {hf_id!r} is not known; known: {known_architecture_ids()}")
    config = json.loads(path.read_text())
    return facts_from_config(config, source=config.get("_source", str(path)))


def read_checkpoint_architecture(directory: str | Path) -> ArchitectureFacts:
    """Facts of a local checkpoint: its config.json, and the safetensors index when present."""
    directory = Path(directory)
    config_path = directory / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"{directory}: no config.json (a model source must hold one)") from None
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{config_path}: not valid JSON: {exc}") from None
    index_path = directory / "model.safetensors.index.json"
    total_size = None
    if index_path.is_file():
        total_size = json.loads(index_path.read_text()).get("metadata", {}).get("total_size")
    return facts_from_config(config, total_size=total_size, source=str(config_path))


def architecture_for(spec: ModelSpec, manifest_dir: str | Path = ".") -> ArchitectureFacts:
    """Facts for a manifest model: its local checkpoint, else its named known architecture."""
    if spec.is_local_source:
        return read_checkpoint_architecture(Path(manifest_dir) / spec.source)
    return known_architecture(spec.architecture)


def draft_architecture_for(spec: ModelSpec) -> ArchitectureFacts | None:
    """The speculative draft model's facts when it is a known architecture (its weights count)."""
    draft = spec.speculative.model if spec.speculative else None
    if draft and draft in known_architecture_ids() and spec.speculative.method == "draft_model":
        return known_architecture(draft)
    return None
