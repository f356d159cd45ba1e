"""Store fixtures: a fresh bucket per test on the session's moto server, and model/adapter
directories written with safetensors + json exactly as `save_pretrained` lays them out
(small enough to build in milliseconds)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import boto3
import numpy as np
import pytest
from safetensors.numpy import save_file

from model_store.architectures import facts_from_config
from model_store.store import ModelStore

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
