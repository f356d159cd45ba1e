"""Store fixtures: a fresh bucket per test on the session's moto server, and model/adapter
directories written with safetensors + json exactly as `save_pretrained` lays them out
(small enough to build in milliseconds)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import boto3
import numpy as np
import pytest
from safetensors.numpy import save_file

from llmfleet.model_store.store.adapters import MAX_OTHER_FILE_BYTES
from llmfleet.model_store.facts.architectures import facts_from_config
from llmfleet.model_store.store.store import ModelStore

MODEL = "tiny"
REVISION = "main"

# A Qwen3-shaped model small enough for fixtures (head_dim 64, as vLLM's CPU attention needs).
TINY_CONFIG = {
    "architectures": ["Qwen3ForCausalLM"],
    "model_type": "qwen3",
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 64,
    "vocab_size": 600,
    "max_position_embeddings": 1024,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
}
TINY_ARCH = facts_from_config(TINY_CONFIG, source="tests")


def write_model(dest: Path, *, config: dict = TINY_CONFIG, weights_bytes: int = 0) -> Path:
    """A model directory: config.json, a tokenizer file and (optionally) a weights file of random bytes."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.json").write_text(json.dumps(config))
    (dest / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 1024}))
    if weights_bytes:
        (dest / "model.safetensors").write_bytes(np.random.default_rng(0).bytes(weights_bytes))
    return dest


def lora_tensors(
    *, rank: int = 8, targets: tuple[str, ...] = ("q_proj", "v_proj"), layers: int = 2, dtype=np.float16, seed: int = 0
) -> dict[str, np.ndarray]:
    """peft's tensors for `targets` on every layer: lora_A (r, in), lora_B (out, r)."""
    rng = np.random.default_rng(seed)
    shapes = TINY_ARCH.linear_shapes()
    tensors = {}
    for layer in range(layers):
        for module in targets:
            block = "self_attn" if module in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            stem = f"base_model.model.model.layers.{layer}.{block}.{module}"
            in_features, out_features = shapes[module]
            tensors[f"{stem}.lora_A.weight"] = rng.standard_normal((rank, in_features)).astype(dtype)
            tensors[f"{stem}.lora_B.weight"] = rng.standard_normal((out_features, rank)).astype(dtype)
    return tensors


def write_adapter(
    dest: Path,
    *,
    rank: int = 8,
    targets: tuple[str, ...] = ("q_proj", "v_proj"),
    base: str = MODEL,
    config: dict | None = None,
    tensors: dict[str, np.ndarray] | None = None,
    seed: int = 0,
) -> Path:
    """An adapter directory as peft's save_pretrained writes it; `config` overrides keys."""
    dest.mkdir(parents=True, exist_ok=True)
    adapter_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "r": rank,
        "lora_alpha": 2 * rank,
        "lora_dropout": 0.0,
        "target_modules": list(targets),
        "bias": "none",
        "use_dora": False,
        "modules_to_save": None,
    } | (config or {})
    (dest / "adapter_config.json").write_text(json.dumps(adapter_config))
    save_file(
        tensors if tensors is not None else lora_tensors(rank=rank, targets=targets, seed=seed),
        str(dest / "adapter_model.safetensors"),
        metadata={"format": "pt"},
    )
    (dest / "README.md").write_text("# adapter\n")
    return dest


def write_trainer_output(dest: Path) -> Path:
    """A Trainer/trl output directory: the adapter plus pickled TrainingArguments and a checkpoint."""
    write_adapter(dest)
    (dest / "training_args.bin").write_bytes(b"\x80\x04\x95 pickled TrainingArguments")
    write_adapter(dest / "checkpoint-500")
    (dest / "checkpoint-500" / "optimizer.pt").write_bytes(b"\x80\x04\x95")
    return dest


def bucket_snapshot(client, bucket: str) -> dict[str, bytes]:
    """Every object's bytes, plus any multipart upload in flight: 'unchanged' means equal snapshots."""
    snapshot = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            snapshot[obj["Key"]] = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        snapshot[f"multipart:{upload['Key']}:{upload['UploadId']}"] = b""
    return snapshot


@pytest.fixture
def s3(aws_env: str):
    return boto3.client("s3", endpoint_url=aws_env)


@pytest.fixture
def bucket(s3) -> str:
    name = f"llmfleet-store-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def store_uri(bucket: str) -> str:
    return f"s3://{bucket}/fleet"


@pytest.fixture
def store(store_uri: str, aws_env: str) -> ModelStore:
    return ModelStore.from_uri(store_uri)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return write_model(tmp_path / "model")


@pytest.fixture
def uploaded_model(store: ModelStore, model_dir: Path) -> str:
    """The tiny base model uploaded as tiny@main (config and tokenizer only)."""
    store.upload_model(model_dir, MODEL, REVISION, uploader="tests")
    return MODEL


@pytest.fixture
def adapter_dir(tmp_path: Path) -> Path:
    return write_adapter(tmp_path / "adapter")


# --- malformed adapters: each breaks one rule of model_store.store.adapters ----------------------------


@dataclass(frozen=True)
class Malformed:
    """An adapter directory that must be refused with `rule` (built fresh by `build(dest)`)."""

    id: str
    rule: str
    build: Callable[[Path], Path]
    name: str = "medical"
    version: str | None = None


def _extra_file(name: str, content: bytes = b"x") -> Callable[[Path], Path]:
    def build(dest: Path) -> Path:
        write_adapter(dest)
        (dest / name).write_bytes(content)
        return dest

    return build


def _without(name: str) -> Callable[[Path], Path]:
    def build(dest: Path) -> Path:
        write_adapter(dest)
        (dest / name).unlink()
        return dest

    return build


def _edited_weights(edit: Callable[[bytes], bytes]) -> Callable[[Path], Path]:
    def build(dest: Path) -> Path:
        write_adapter(dest)
        weights = dest / "adapter_model.safetensors"
        weights.write_bytes(edit(weights.read_bytes()))
        return dest

    return build


def _with_tensors(change: Callable[[dict[str, np.ndarray]], None], rank: int = 8) -> Callable[[Path], Path]:
    def build(dest: Path) -> Path:
        tensors = lora_tensors(rank=rank)
        change(tensors)
        return write_adapter(dest, rank=rank, tensors=tensors)

    return build


_Q0 = "base_model.model.model.layers.0.self_attn.q_proj"


def _symlinked_readme(dest: Path) -> Path:
    write_adapter(dest)
    (dest / "README.md").unlink()
    (dest / "README.md").symlink_to("/etc/hostname")
    return dest


def _nested_dir(dest: Path) -> Path:
    write_adapter(dest)
    write_adapter(dest / "best")
    return dest


def _oversized_readme(dest: Path) -> Path:
    write_adapter(dest)
    with (dest / "README.md").open("wb") as handle:
        handle.truncate(MAX_OTHER_FILE_BYTES + 1)  # sparse: large on paper, nothing on disk
    return dest


MALFORMED_ADAPTERS = [
    Malformed("wrong-base-model", "base_model", lambda d: write_adapter(d, base="meta-llama/Llama-3.1-8B-Instruct")),
    Malformed("rank-too-high", "rank", lambda d: write_adapter(d, rank=128)),
    Malformed("rank-pattern-too-high", "rank", lambda d: write_adapter(d, config={"rank_pattern": {"q_proj": 256}})),
    Malformed(
        "unknown-target-module",
        "target_modules",
        lambda d: write_adapter(d, config={"target_modules": ["q_proj", "c_attn"]}),
    ),
    Malformed("empty-target-modules", "target_modules", lambda d: write_adapter(d, config={"target_modules": []})),
    Malformed("pickle-weights", "pickle", _extra_file("adapter_model.bin", b"\x80\x04\x95")),
    Malformed("pickle-optimizer-state", "pickle", _extra_file("optimizer.pt")),
    Malformed("truncated-safetensors", "safetensors", _edited_weights(lambda b: b[: len(b) - 100])),
    Malformed("garbage-safetensors-header", "safetensors", _edited_weights(lambda b: b"\xff" * 8 + b[8:])),
    Malformed(
        "lora-A-shape-mismatch",
        "shape",
        _with_tensors(lambda t: t.__setitem__(f"{_Q0}.lora_A.weight", np.zeros((8, 100), np.float16))),
    ),
    Malformed("tensor-rank-differs-from-r", "shape", lambda d: write_adapter(d, rank=8, tensors=lora_tensors(rank=4))),
    Malformed("lora-B-missing", "shape", _with_tensors(lambda t: t.pop(f"{_Q0}.lora_B.weight"))),
    Malformed(
        "layer-out-of-range",
        "tensor_name",
        _with_tensors(
            lambda t: t.__setitem__(
                "base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight", np.zeros((8, 128), np.float16)
            )
        ),
    ),
    Malformed(
        "full-weight-tensor",
        "tensor_name",
        _with_tensors(lambda t: t.__setitem__("base_model.model.lm_head.weight", np.zeros((600, 128), np.float16))),
    ),
    Malformed(
        "integer-weights",
        "dtype",
        _with_tensors(lambda t: t.__setitem__(f"{_Q0}.lora_A.weight", np.zeros((8, 128), np.int8))),
    ),
    Malformed("missing-adapter-config", "missing_file", _without("adapter_config.json")),
    Malformed("missing-weights", "missing_file", _without("adapter_model.safetensors")),
    Malformed("config-not-json", "config", _extra_file("adapter_config.json", b"{'r': 8,")),
    Malformed("not-lora", "peft_type", lambda d: write_adapter(d, config={"peft_type": "PREFIX_TUNING"})),
    Malformed("alpha-a-word", "config", lambda d: write_adapter(d, config={"lora_alpha": "sixteen"})),
    Malformed("rank-a-bool", "config", lambda d: write_adapter(d, config={"r": True})),
    Malformed("targets-a-number", "config", lambda d: write_adapter(d, config={"target_modules": 3})),
    Malformed("dora", "feature", lambda d: write_adapter(d, config={"use_dora": True})),
    Malformed("modules-to-save", "feature", lambda d: write_adapter(d, config={"modules_to_save": ["lm_head"]})),
    Malformed("symlink", "symlink", _symlinked_readme),
    Malformed("nested-dir", "layout", _nested_dir),
    Malformed("unsafe-file-name", "file_name", _extra_file("notes for you.txt")),
    Malformed("oversized-file", "size", _oversized_readme),
    Malformed("path-traversal-name", "name", write_adapter, name="../../models/tiny"),
    Malformed("slash-in-name", "name", write_adapter, name="medical/v2"),
    Malformed("path-traversal-version", "version", write_adapter, version="../main"),
]
