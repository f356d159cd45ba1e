"""Fleet manifest: the example parses, round-trips, and bad input is refused with the field named."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml

from llmfleet.model_store.contract.manifest import (
    fleet_json_schema,
    FleetManifest,
    load_fleet,
    ManifestError,
    parse_fleet,
)

REPO = Path(__file__).resolve().parents[2]

VALID_MODEL = {
    "name": "qwen3-small",
    "source": "s3://llmfleet-store/models/qwen3-small",
    "architecture": "Qwen/Qwen3-0.6B",
}


def fleet_text(model_overrides: dict | None = None, **fleet_overrides) -> str:
    model = {**VALID_MODEL, **(model_overrides or {})}
    document = {"name": "demo", "models": [model], **fleet_overrides}
    return yaml.safe_dump(document, sort_keys=False)


def test_example_fleet_parses_and_covers_every_path() -> None:
    fleet = load_fleet(REPO / "fleet.yaml")
    assert [m.name for m in fleet.models] == [
        "qwen3-small",
        "r1-distill-14b",
        "mistral-small-24b-fp8",
        "llama3-70b",
        "qwen25-7b-awq",
    ]
    small = fleet.model("qwen3-small")
    assert [a.name for a in small.lora.adapters] == ["medical", "legal", "finance"]
    assert fleet.model("r1-distill-14b").reasoning_parser == "deepseek_r1"
    assert fleet.model("mistral-small-24b-fp8").quantization.value == "fp8"
    assert fleet.model("llama3-70b").speculative.model == "meta-llama/Llama-3.2-1B-Instruct"


def test_round_trip_through_json_and_yaml_is_lossless() -> None:
    fleet = load_fleet(REPO / "fleet.yaml")
    again = FleetManifest.model_validate_json(fleet.model_dump_json())
    assert again == fleet
    via_yaml = parse_fleet(yaml.safe_dump(fleet.model_dump(mode="json")))
    assert via_yaml == fleet


def test_defaults_are_filled() -> None:
    fleet = parse_fleet(fleet_text())
    model = fleet.models[0]
    assert (fleet.region, fleet.stage) == ("us-east-1", "prod")
    assert model.serving.targets == ["ecs"]
    assert model.max_model_len == 4096
    assert model.lora is None


# (description, fleet text, fragments the error must contain)
MALFORMED = [
    ("unknown model key", fleet_text({"max_len": 10}), ["model 'qwen3-small'", "'max_len'", "unknown key"]),
    ("unknown fleet key", fleet_text(regions="x"), ["'regions'", "unknown key"]),
    ("name not DNS-safe", fleet_text({"name": "Qwen_Small"}), ["field 'name'", "'Qwen_Small'"]),
    ("bad quantization", fleet_text({"quantization": "int3"}), ["'quantization'", "awq", "'int3'"]),
    ("bad dtype", fleet_text({"dtype": "float64"}), ["'dtype'", "bfloat16", "'float64'"]),
    ("bad kv cache dtype", fleet_text({"kv_cache_dtype": "int4"}), ["'kv_cache_dtype'", "fp8"]),
    ("context too short", fleet_text({"max_model_len": 16}), ["'max_model_len'", "128"]),
    ("unknown reasoning parser", fleet_text({"reasoning_parser": "r2"}), ["'reasoning_parser'", "deepseek_r1", "'r2'"]),
    ("lora rank vLLM lacks", fleet_text({"lora": {"max_rank": 12}}), ["'lora.max_rank'", "[1, 8, 16"]),
    (
        "duplicate adapter",
        fleet_text({"lora": {"adapters": [{"name": "a"}, {"name": "a"}]}}),
        ["'lora'", "repeated: ['a']"],
    ),
    ("unsafe adapter name", fleet_text({"lora": {"adapters": [{"name": "../etc"}]}}), ["'lora.adapters.0.name'"]),
    ("bad target", fleet_text({"serving": {"targets": ["eks"]}}), ["'serving.targets.0'", "'ecs'", "'eks'"]),
    (
        "min above max capacity",
        fleet_text({"serving": {"min_capacity": 5, "max_capacity": 2}}),
        ["'serving'", "min_capacity (5) exceeds max_capacity (2)"],
    ),
    ("http source", fleet_text({"source": "https://hf.co/x"}), ["'source'", "only s3://"]),
    ("architecture not a Hub id", fleet_text({"architecture": "qwen3 8b"}), ["field 'architecture'", "org/name"]),
    ("speculative without draft", fleet_text({"speculative": {"method": "eagle"}}), ["'speculative'", "draft 'model'"]),
    ("ngram with a draft model", fleet_text({"speculative": {"method": "ngram", "model": "x"}}), ["'speculative'", "ngram"]),
    ("no models", yaml.safe_dump({"name": "demo", "models": []}), ["field 'models'", "at least 1"]),
    (
        "duplicate model names",
        yaml.safe_dump({"name": "demo", "models": [VALID_MODEL, VALID_MODEL]}),
        ["'models'", "repeated: ['qwen3-small']"],
    ),
    ("runai from local dir", fleet_text({"source": "models/x", "load_format": "runai_streamer"}), ["runai_streamer", "s3://"]),
    ("bad region", fleet_text(region="mars"), ["field 'region'", "'mars'"]),
    ("missing name", yaml.safe_dump({"models": [VALID_MODEL]}), ["field 'name'", "Field required"]),
    ("capacity wrong type", fleet_text({"serving": {"max_capacity": "lots"}}), ["'serving.max_capacity'", "'lots'"]),
]


@pytest.mark.parametrize(("description", "text", "fragments"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_manifest_is_refused_naming_the_field(description: str, text: str, fragments: list[str]) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_fleet(text, origin="fleet.yaml")
    message = str(caught.value)
    assert message.startswith("fleet.yaml:"), message
    for fragment in fragments:
        assert fragment in message, f"{description}: {fragment!r} not in {message!r}"


def test_error_points_at_the_offending_line() -> None:
    text = textwrap.dedent(
        """\
        name: demo
        models:
          - name: good
            source: s3://llmfleet-store/models/good
            architecture: Qwen/Qwen3-0.6B
          - name: bad
            source: s3://llmfleet-store/models/bad
            architecture: Qwen/Qwen3-0.6B
            dtype: float64
        """
    )
    with pytest.raises(ManifestError) as caught:
        parse_fleet(text, origin="f.yaml")
    assert str(caught.value).startswith("f.yaml:9: model 'bad', field 'dtype'")


def test_not_yaml_and_not_a_mapping_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"f.yaml:2: not valid YAML"):
        parse_fleet("name: x\n  bad: [", origin="f.yaml")
    with pytest.raises(ManifestError, match="a fleet manifest is a mapping"):
        parse_fleet("- a\n- b\n", origin="f.yaml")
    with pytest.raises(ManifestError, match="cannot read the fleet manifest"):
        load_fleet(tmp_path / "absent.yaml")


def test_unknown_model_lookup_lists_the_known_ones() -> None:
    fleet = parse_fleet(fleet_text())
    with pytest.raises(ManifestError, match=r"no model 'x'; it has \['qwen3-small'\]"):
        fleet.model("x")


def test_json_schema_forbids_unknown_keys_and_validates_the_example() -> None:
    schema = fleet_json_schema()
    assert schema["additionalProperties"] is False
    assert schema["$defs"]["ModelSpec"]["additionalProperties"] is False
    assert set(schema["$defs"]["ModelSpec"]["properties"]) >= {"quantization", "lora", "serving", "speculative"}
    import jsonschema
    example = yaml.safe_load((REPO / "fleet.yaml").read_text())
    jsonschema.validate(example, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**example, "surprise": 1}, schema)
    json.dumps(schema)  # serialisable


def test_s3_source_must_be_the_models_place_in_the_store() -> None:
    with pytest.raises(ManifestError, match=r"must be the model's place in the store, s3://<bucket>\[/<prefix>\]/models/qwen3-small"):
        parse_fleet(fleet_text({"source": "s3://llmfleet-store/weights/qwen3"}))
    spec = parse_fleet(fleet_text({"source": "s3://llmfleet-store/team-a/models/qwen3-small/"})).models[0]
    assert spec.store_uri == "s3://llmfleet-store/team-a"
    assert parse_fleet(fleet_text()).models[0].store_uri == "s3://llmfleet-store"


def test_a_binary_file_is_one_line_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_bytes(bytes(range(256)))
    with pytest.raises(ManifestError, match=r"fleet.yaml: not a fleet manifest: byte 128 is not UTF-8 text"):
        load_fleet(path)


def test_a_store_model_may_leave_out_its_source() -> None:
    fleet = parse_fleet("name: f\nstore: s3://llmfleet-store/pre\nmodels:\n  - {name: a, architecture: Qwen/Qwen3-8B@v1}\n")
    spec = fleet.models[0]
    assert spec.source == "s3://llmfleet-store/pre/models/a" and spec.store_uri == "s3://llmfleet-store/pre"
    assert (spec.hub_id, spec.hub_revision) == ("Qwen/Qwen3-8B", "v1")
    with pytest.raises(ManifestError, match="'hf://Qwen/Qwen3-8B': weights are served from the store; set architecture: Qwen/Qwen3-8B"):
        parse_fleet("name: f\nmodels:\n  - {name: a, source: 'hf://Qwen/Qwen3-8B'}\n")


def test_the_store_of_a_model_is_its_sources_else_the_fleets() -> None:
    """What `llmfleet model|adapter` use when --store and LLMFLEET_STORE are not given."""
    fleet = parse_fleet(
        "name: f\nstore: s3://shared/pre\nmodels:\n"
        "  - {name: a, architecture: Qwen/Qwen3-8B}\n"
        "  - {name: b, source: 's3://team-b/models/b', architecture: Qwen/Qwen3-8B}\n"
        "  - {name: c, source: ./c}\n"
    )
    assert [fleet.store_for(name) for name in ("a", "b", "c", "unlisted")] == ["s3://shared/pre", "s3://team-b", "s3://shared/pre", "s3://shared/pre"]
    assert parse_fleet("name: f\nmodels:\n  - {name: c, source: ./c}\n").store_for("c") is None


def test_every_schema_property_is_described() -> None:
    """Editors show these descriptions as the manifest's documentation."""
    schema = fleet_json_schema()
    objects = {"FleetManifest": schema, **schema["$defs"]}
    undescribed = [
        f"{name}.{prop}" for name, obj in objects.items() for prop, spec in obj.get("properties", {}).items() if "description" not in spec
    ]
    assert not undescribed
