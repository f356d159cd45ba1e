"""Adapter validation on directories built in tmp_path (safetensors + json, no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmfleet.model_store.store.adapters import (
    accepted_bases_for,
    AdapterRejected,
    check_segment,
    DEFAULT_MAX_RANK,
    max_rank_for,
    validate_adapter,
)
from llmfleet.model_store.contract.manifest import parse_fleet
from tests.integration.conftest import (
    MALFORMED_ADAPTERS,
    MODEL,
    TINY_ARCH,
    Malformed,
    lora_tensors,
    write_adapter,
    write_trainer_output,
)

FLEET = parse_fleet(
    """
name: demo
models:
  - name: tiny
    source: s3://llmfleet-store/models/tiny
    architecture: Qwen/Qwen3-0.6B
    aliases: [/data/checkpoints/tiny/]
    lora: {max_rank: 16}
  - name: plain
    source: s3://llmfleet-store/models/plain
    architecture: Qwen/Qwen3-0.6B
"""
)


def validate(directory: Path, *, max_rank: int = DEFAULT_MAX_RANK, bases: tuple[str, ...] = ()):
    return validate_adapter(directory, model_name=MODEL, accepted_bases=bases, max_rank=max_rank, arch=TINY_ARCH)


def test_a_peft_directory_passes_and_is_described(tmp_path: Path) -> None:
    info = validate(write_adapter(tmp_path / "a", rank=16, targets=("q_proj", "k_proj", "o_proj", "down_proj")))
    assert info.rank == 16
    assert info.base_model == MODEL
    assert info.target_modules == ("q_proj", "k_proj", "o_proj", "down_proj")
    assert info.tensor_count == 2 * 4 * 2  # layers x modules x (A, B)
    assert info.files == ("README.md", "adapter_config.json", "adapter_model.safetensors")
    assert info.weights_bytes == (tmp_path / "a" / "adapter_model.safetensors").stat().st_size


def test_a_trainer_output_directory_publishes_without_its_leftovers(tmp_path: Path) -> None:
    info = validate(write_trainer_output(tmp_path / "out"))
    assert info.files == ("README.md", "adapter_config.json", "adapter_model.safetensors")
    assert info.left_out == ("checkpoint-500", "training_args.bin")


def test_all_linear_and_rank_pattern_are_understood(tmp_path: Path) -> None:
    tensors = lora_tensors(rank=8, targets=("q_proj",)) | lora_tensors(rank=4, targets=("gate_proj",))
    directory = write_adapter(
        tmp_path / "a", config={"target_modules": "all-linear", "rank_pattern": {"gate_proj": 4}}, tensors=tensors
    )
    info = validate(directory)
    assert set(info.target_modules) == set(TINY_ARCH.linear_shapes())


@pytest.mark.parametrize(
    "case", [c for c in MALFORMED_ADAPTERS if c.name == "medical" and c.version is None], ids=lambda c: c.id
)
def test_each_malformed_adapter_is_refused_naming_its_rule(tmp_path: Path, case: Malformed) -> None:
    with pytest.raises(AdapterRejected) as refused:
        validate(case.build(tmp_path / "adapter"))
    assert refused.value.rule == case.rule
    assert f"[{case.rule}]" in str(refused.value)


def test_rank_ceiling_comes_from_the_caller(tmp_path: Path) -> None:
    directory = write_adapter(tmp_path / "a", rank=32)
    assert validate(directory, max_rank=32).rank == 32
    with pytest.raises(AdapterRejected, match=r"r = 32 exceeds the model's lora.max_rank 16"):
        validate(directory, max_rank=16)


def test_base_model_may_be_an_accepted_alias(tmp_path: Path) -> None:
    directory = write_adapter(tmp_path / "a", base="/data/checkpoints/tiny/")
    with pytest.raises(AdapterRejected, match="accepted: \\['tiny'\\]"):
        validate(directory)
    assert validate(directory, bases=accepted_bases_for(FLEET, MODEL)).base_model == "/data/checkpoints/tiny/"


def test_max_rank_from_the_fleet_else_the_default() -> None:
    assert max_rank_for(FLEET, "tiny") == 16
    assert max_rank_for(FLEET, "unlisted") == DEFAULT_MAX_RANK
    assert max_rank_for(None, "tiny") == DEFAULT_MAX_RANK
    with pytest.raises(AdapterRejected) as refused:
        max_rank_for(FLEET, "plain")
    assert refused.value.rule == "lora"


def test_accepted_bases_are_name_source_and_aliases() -> None:
    assert accepted_bases_for(FLEET, "tiny", "Qwen/Qwen3-0.6B") == (
        "tiny",
        "Qwen/Qwen3-0.6B",
        "s3://llmfleet-store/models/tiny",
        "/data/checkpoints/tiny",
    )
    assert accepted_bases_for(None, "tiny") == ("tiny",)


@pytest.mark.parametrize("value", ["..", "../x", "a/b", "", " lead", "x" * 65, "tab\tname", "ünï"])
def test_unsafe_segments_are_refused(value: str) -> None:
    with pytest.raises(AdapterRejected) as refused:
        check_segment("adapter name", value)
    assert refused.value.rule == "name"


def test_safe_segments_pass() -> None:
    assert check_segment("version", "v1.2_rc-3") == "v1.2_rc-3"
