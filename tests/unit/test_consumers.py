"""The gateway's manifest section and consumers file: valid ones parse, bad ones name field, value and what is allowed."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from llmfleet.model_store.gateway.consumers import allowed_model_names, load_consumers, parse_consumers
from llmfleet.model_store.contract.manifest import ManifestError, parse_fleet

FLEET = textwrap.dedent(
    """
    name: demo
    store: s3://llmfleet-store
    models:
      - name: qwen3-small
        architecture: Qwen/Qwen3-0.6B
        aliases: [Qwen/Qwen3-0.6B]
        lora: {adapters: [{name: medical}]}
      - name: llama-3-8b
        architecture: meta-llama/Meta-Llama-3-8B-Instruct
    gateway:
      enabled: true
      consumers: consumers.yaml
      fallbacks: {qwen3-small: [llama-3-8b]}
      prices: {llama-3-8b: {prompt_usd_per_million: 0.1, completion_usd_per_million: 0.4}}
    """
)


def consumers_text(*entries: dict) -> str:
    return yaml.safe_dump({"consumers": list(entries)}, sort_keys=False)


@pytest.fixture
def fleet():
    return parse_fleet(FLEET)


def test_gateway_section_parses_with_defaults_off() -> None:
    fleet = parse_fleet(FLEET)
    assert fleet.gateway.enabled and fleet.gateway.fallbacks == {"qwen3-small": ["llama-3-8b"]}
    assert fleet.gateway.prices["llama-3-8b"].completion_usd_per_million == 0.4
    plain = parse_fleet(FLEET.split("gateway:")[0])
    assert not plain.gateway.enabled and plain.gateway.consumers is None and plain.gateway.fallbacks == {}


@pytest.mark.parametrize(
    ("gateway", "expected"),
    [
        ({"fallbacks": {"qwen3-small": ["nope"]}}, "gateway.fallbacks: 'nope' is not a model of the fleet; allowed: ['llama-3-8b', 'qwen3-small']"),
        ({"fallbacks": {"nope": ["qwen3-small"]}}, "'nope' is not a model of the fleet"),
        ({"fallbacks": {"qwen3-small": ["qwen3-small"]}}, "must not repeat a model or name 'qwen3-small' itself"),
        ({"prices": {"nope": {"prompt_usd_per_million": 1, "completion_usd_per_million": 1}}}, "gateway.prices: ['nope'] are not models"),
        ({"consumers": "/etc/consumers.yaml"}, "field 'gateway.consumers'"),
        ({"consumers": "../consumers.yaml"}, "must stay beside the fleet file"),
        ({"consumers": "consumers.json"}, "(got 'consumers.json')"),
        ({"enabled": "maybe"}, "field 'gateway.enabled'"),
        ({"rate": 3}, "field 'gateway.rate': unknown key"),
        ({"prices": {"qwen3-small": {"prompt_usd_per_million": -1, "completion_usd_per_million": 1}}}, "greater than or equal to 0 (got -1)"),
    ],
)
def test_bad_gateway_section_names_field_value_and_allowed(gateway: dict, expected: str) -> None:
    document = yaml.safe_load(FLEET)
    document["gateway"] = gateway
    with pytest.raises(ManifestError) as error:
        parse_fleet(yaml.safe_dump(document), origin="fleet.yaml")
    assert expected in str(error.value)
    assert str(error.value).startswith("fleet.yaml:")


def test_fallback_to_another_kind_is_refused() -> None:
    document = yaml.safe_load(FLEET)
    document["models"].append({"name": "sd", "architecture": "stabilityai/stable-diffusion-3.5-large-turbo", "kind": "image"})
    document["gateway"] = {"fallbacks": {"qwen3-small": ["sd"]}}
    with pytest.raises(ManifestError, match=r"\['sd'\] are not text models like 'qwen3-small'"):
        parse_fleet(yaml.safe_dump(document))


def test_consumers_parse(fleet) -> None:
    consumers = parse_consumers(
        consumers_text(
            {"name": "search-team", "models": ["qwen3-small", "qwen3-small:medical"], "rpm": 600, "tpm": 200000},
            {"name": "ops", "models": ["*"], "monthly_budget_usd": 500},
            {"name": "late", "models": ["qwen3-small:promoted-later", "qwen3-small:*", "Qwen/Qwen3-0.6B"], "rpm": 60},
        ),
        fleet,
    )
    assert [c.name for c in consumers.consumers] == ["search-team", "ops", "late"]
    assert consumers.consumer("ops").monthly_budget_usd == 500
    assert consumers.peak_requests_per_second() is None  # ops has no rpm
    limited = parse_consumers(consumers_text({"name": "a", "models": ["*"], "rpm": 600}, {"name": "b", "models": ["*"], "rpm": 60}), fleet)
    assert limited.peak_requests_per_second() == 11


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"name": "Search", "models": ["*"]}, "consumers.yaml:2: consumer 'Search', field 'name': must be lowercase letters, digits and '-', 1-64 characters, starting and ending alphanumeric (got 'Search')"),
        ({"name": "a", "models": ["gpt-4"]}, "consumer 'a', field 'models': 'gpt-4' is not served by fleet 'demo'; allowed: ['*', 'Qwen/Qwen3-0.6B', 'llama-3-8b', 'qwen3-small', 'qwen3-small:*', 'qwen3-small:medical'], or '<model>:<adapter>' for ['qwen3-small']"),
        ({"name": "a", "models": ["llama-3-8b:medical"]}, "'llama-3-8b:medical' is not served"),
        ({"name": "a", "models": ["qwen3-small:../x"]}, "'qwen3-small:../x' is not served"),
        ({"name": "a", "models": []}, "field 'models': List should have at least 1 item"),
        ({"name": "a", "models": ["*", "*"]}, "models repeat ['*']"),
        ({"name": "a", "models": ["*"], "rpm": 0}, "field 'rpm': Input should be greater than or equal to 1 (got 0)"),
        ({"name": "a", "models": ["*"], "monthly_budget_usd": -5}, "field 'monthly_budget_usd'"),
        ({"name": "a", "models": ["*"], "key": "sk-123"}, "field 'key': unknown key"),
    ],
)
def test_bad_consumer_names_field_value_and_allowed(fleet, entry: dict, expected: str) -> None:
    with pytest.raises(ManifestError) as error:
        parse_consumers(consumers_text(entry), fleet, origin="consumers.yaml")
    assert expected in str(error.value)


def test_repeated_consumer_and_non_mapping_are_refused(fleet) -> None:
    with pytest.raises(ManifestError, match=r"consumer names must be unique, repeated: \['a'\]"):
        parse_consumers(consumers_text({"name": "a", "models": ["*"]}, {"name": "a", "models": ["*"]}), fleet)
    with pytest.raises(ManifestError, match="a consumers file is a mapping with 'consumers'"):
        parse_consumers("- a\n", fleet)


def test_allowed_names_cover_models_aliases_and_adapters(fleet) -> None:
    names = allowed_model_names(fleet)
    assert set(names) == {"*", "qwen3-small", "Qwen/Qwen3-0.6B", "qwen3-small:*", "qwen3-small:medical", "llama-3-8b"}


def test_load_consumers_reads_the_file_beside_the_fleet(tmp_path: Path, fleet) -> None:
    (tmp_path / "consumers.yaml").write_text(consumers_text({"name": "a", "models": ["llama-3-8b"]}))
    assert load_consumers(fleet, tmp_path / "fleet.yaml").consumers[0].models == ["llama-3-8b"]
    with pytest.raises(ManifestError, match="cannot read the consumers file"):
        load_consumers(fleet, tmp_path / "elsewhere" / "fleet.yaml")
    assert load_consumers(parse_fleet(FLEET.split("gateway:")[0]), tmp_path / "fleet.yaml").consumers == []
