"""Whatever a user points the tools at — random bytes, random YAML/JSON documents, deep
nesting, a huge file — ends in one error line naming the file, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmfleet.model_store.facts.architectures import read_checkpoint_architecture
from llmfleet.model_store.facts.families import ConfigError, facts_from_config
from llmfleet.model_store.contract.manifest import load_fleet, ManifestError

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=30,
)
# Keys the planner reads, so random documents reach past the first missing key.
config_keys = st.sampled_from(
    ["model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
     "intermediate_size", "vocab_size", "layer_types", "sliding_window", "quantization_config", "text_config",
     "vision_config", "num_local_experts", "kv_lora_rank", "torch_dtype", "max_position_embeddings"]
)  # fmt: skip


def _one_line_naming(error: Exception, name: str) -> None:
    text = str(error)
    assert name in text.splitlines()[0] and "Traceback" not in text


@FUZZ
@given(data=st.binary(max_size=2000))
def test_random_bytes_as_a_fleet_manifest(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_bytes(data)
    try:
        load_fleet(path)
    except ManifestError as error:
        _one_line_naming(error, "fleet.yaml")


@FUZZ
@given(document=json_values)
def test_random_documents_as_a_fleet_manifest(tmp_path: Path, document) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(json.dumps(document))  # JSON is YAML
    try:
        load_fleet(path)
    except ManifestError as error:
        _one_line_naming(error, "fleet.yaml")


def test_deep_nesting_and_a_huge_manifest(tmp_path: Path) -> None:
    deep = tmp_path / "deep.yaml"
    deep.write_text("[" * 50_000 + "]" * 50_000)
    huge = tmp_path / "huge.yaml"
    huge.write_text("name: f\nmodels:\n" + "  - {name: m, source: m}\n" * 20_000)
    for path in (deep, huge):
        try:
            load_fleet(path)
        except ManifestError as error:
            _one_line_naming(error, path.name)


@FUZZ
@given(config=st.dictionaries(config_keys, json_values, max_size=12))
def test_random_config_json_is_read_or_refused_naming_the_source(config: dict) -> None:
    try:
        facts_from_config(config, source="random/config.json")
    except ConfigError as error:
        _one_line_naming(error, "random/config.json")


@FUZZ
@given(data=st.binary(max_size=600))
def test_random_bytes_as_a_checkpoints_files(tmp_path: Path, data: bytes) -> None:
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes(data if name == "model.safetensors" else b'{"model_type": "llama"}')
    (tmp_path / "config.json").write_bytes(data[:300])
    try:
        read_checkpoint_architecture(tmp_path)
    except ConfigError as error:
        assert str(tmp_path) in str(error).splitlines()[0]
