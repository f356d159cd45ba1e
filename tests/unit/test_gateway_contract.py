"""The names the gateway stack and the gateway container share."""

from __future__ import annotations

import pytest

from llmfleet.model_store.gateway import contract


def test_upstream_key_env_is_a_valid_env_name_per_model() -> None:
    assert contract.upstream_key_env("qwen3-8b") == "LLMFLEET_UPSTREAM_KEY_QWEN3_8B"
    assert contract.upstream_key_env("a-b") != contract.upstream_key_env("ab")


def test_keys_secret_name_is_per_fleet_and_stage() -> None:
    assert contract.gateway_keys_secret_name("demo", "prod") == "llmfleet/demo/prod/gateway-keys"
    assert contract.gateway_keys_secret_name("demo", "dev") != contract.gateway_keys_secret_name("demo", "prod")


def test_database_env_names_map_to_the_rds_secret_fields() -> None:
    assert set(contract.DB_SECRET_FIELDS.values()) == {"host", "port", "username", "password", "dbname"}
    assert all(name.startswith("LLMFLEET_GATEWAY_DB_") for name in contract.DB_SECRET_FIELDS)


@pytest.mark.parametrize(
    ("peak", "most"),
    [(None, 4 * contract.MIN_TASKS), (1.0, contract.MIN_TASKS), (10 * contract.REQUESTS_PER_SECOND_PER_TASK + 1, 11)],
)
def test_sizing_follows_the_peak_rate(peak: float | None, most: int) -> None:
    sizing = contract.gateway_sizing(peak)
    assert (sizing.min_tasks, sizing.max_tasks) == (contract.MIN_TASKS, most)
    assert sizing.cpu_units == 1024 and sizing.memory_mib >= 1024
