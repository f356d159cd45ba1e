"""The registry's pure parts: transitions, the document form, and per-server rollout choice."""

from __future__ import annotations

import pytest

from llmfleet.model_store.store.registry import (
    AdapterEntry,
    adapters_for_server,
    promoted,
    RegistryError,
    RegistryState,
    retired,
    rolled_back,
    rollout_position,
)

NOW = "2026-11-25T12:00:00.000+00:00"
EMPTY = RegistryState.empty("tiny", "prod")


def promote(state: RegistryState, version: str, fraction: float = 1.0, name: str = "medical") -> RegistryState:
    changed = promoted(state, name, version, fraction=fraction, actor="ci", now=NOW)
    assert changed is not None
    return changed


def test_promotions_chain_previous_versions_and_count_generations() -> None:
    state = promote(promote(EMPTY, "v1"), "v2")
    assert state.adapters["medical"] == AdapterEntry("v2", "v1", 1.0)
    assert state.generation == 2
    assert [(h["generation"], h["action"], h["from"], h["to"]) for h in state.history] == [
        (1, "promote", None, "v1"),
        (2, "promote", "v1", "v2"),
    ]
    assert state.history[1]["actor"] == "ci" and state.history[1]["time"] == NOW


def test_promoting_the_current_version_again_changes_nothing() -> None:
    state = promote(EMPTY, "v1")
    assert promoted(state, "medical", "v1", fraction=1.0, actor="ci", now=NOW) is None


def test_a_staged_rollout_keeps_the_fallback_until_it_completes() -> None:
    canary = promote(promote(EMPTY, "v1"), "v2", fraction=0.1)
    assert canary.adapters["medical"] == AdapterEntry("v2", "v1", 0.1)
    widened = promote(canary, "v2", fraction=1.0)
    assert widened.adapters["medical"] == AdapterEntry("v2", "v1", 1.0)
    # A new canary over an unfinished one replaces it and keeps the last full rollout as fallback.
    replaced = promote(canary, "v3", fraction=0.2)
    assert replaced.adapters["medical"] == AdapterEntry("v3", "v1", 0.2)


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5])
def test_fraction_must_be_a_share(fraction: float) -> None:
    with pytest.raises(RegistryError, match="outside \\(0, 1\\]"):
        promoted(EMPTY, "medical", "v1", fraction=fraction, actor="ci", now=NOW)


def test_rollbacks_walk_back_through_the_history() -> None:
    state = promote(promote(promote(EMPTY, "v1"), "v2"), "v3")
    once = rolled_back(state, "medical", actor="oncall", now=NOW)
    assert once.adapters["medical"] == AdapterEntry("v2", "v1", 1.0)
    assert once.history[-1] | {"time": None} == {
        "generation": 4, "time": None, "actor": "oncall", "action": "rollback",
        "name": "medical", "from": "v3", "to": "v2", "fraction": 1.0, "previous": "v1",
    }  # fmt: skip
    twice = rolled_back(once, "medical", actor="oncall", now=NOW)
    assert twice.adapters["medical"] == AdapterEntry("v1", None, 1.0)
    with pytest.raises(RegistryError, match="no previous version"):
        rolled_back(twice, "medical", actor="oncall", now=NOW)


def test_rollback_of_a_canary_returns_everyone_to_the_fallback() -> None:
    canary = promote(promote(EMPTY, "v1"), "v2", fraction=0.25)
    assert rolled_back(canary, "medical", actor="ci", now=NOW).adapters["medical"] == AdapterEntry("v1", None, 1.0)


def test_unknown_names_are_refused() -> None:
    with pytest.raises(RegistryError, match="not registered"):
        rolled_back(EMPTY, "medical", actor="ci", now=NOW)
    with pytest.raises(RegistryError, match="not registered"):
        retired(EMPTY, "medical", actor="ci", now=NOW)


def test_retire_removes_the_name_and_records_it() -> None:
    state = retired(promote(promote(EMPTY, "v1"), "v1", name="legal"), "medical", actor="ci", now=NOW)
    assert set(state.adapters) == {"legal"}
    assert state.history[-1]["action"] == "retire" and state.history[-1]["from"] == "v1"


def test_the_document_round_trips() -> None:
    state = promote(promote(EMPTY, "v1"), "v2", fraction=0.5)
    again = RegistryState.from_json(state.to_json(), etag='"e"', where="test")
    assert again == RegistryState(state.model, state.stage, state.generation, state.adapters, state.history, '"e"')


def test_a_corrupt_document_is_a_registry_error() -> None:
    with pytest.raises(RegistryError, match="s3://b/registry/tiny/prod.json: not a valid registry document"):
        RegistryState.from_json(b'{"format": 1}', etag=None, where="s3://b/registry/tiny/prod.json")


SERVERS = [f"i-{n:017x}" for n in range(2000)]


def test_full_rollouts_reach_every_server() -> None:
    state = promote(promote(EMPTY, "v1", name="legal"), "v2")
    assert {s: adapters_for_server(state, s) for s in SERVERS[:50]} == {
        s: {"legal": "v1", "medical": "v2"} for s in SERVERS[:50]
    }


def test_a_staged_rollout_picks_a_stable_fraction_of_servers() -> None:
    state = promote(promote(EMPTY, "v1"), "v2", fraction=0.1)
    choices = [adapters_for_server(state, s)["medical"] for s in SERVERS]
    assert set(choices) == {"v1", "v2"}
    assert 0.07 < choices.count("v2") / len(SERVERS) < 0.13
    assert choices == [adapters_for_server(state, s)["medical"] for s in SERVERS]  # deterministic
    # Widening the same rollout only adds servers: nobody flips back to v1.
    wider = promote(state, "v2", fraction=0.5)
    for server, before in zip(SERVERS, choices, strict=True):
        if before == "v2":
            assert adapters_for_server(wider, server)["medical"] == "v2"


def test_servers_outside_a_first_rollout_serve_nothing_yet() -> None:
    state = promote(EMPTY, "v1", fraction=0.3)
    outside = [s for s in SERVERS if rollout_position(s, "medical", "v1") >= 0.3]
    assert outside and all(adapters_for_server(state, s) == {} for s in outside)


def test_rollout_membership_differs_between_versions() -> None:
    """Each rollout draws its own canaries, so the same few servers do not always go first."""
    first = {s for s in SERVERS if rollout_position(s, "medical", "v2") < 0.1}
    second = {s for s in SERVERS if rollout_position(s, "medical", "v3") < 0.1}
    assert first != second
