"""Adapter routes shared by the entrypoint and the middleware: names, atomic replacement."""

from __future__ import annotations

from pathlib import Path

from llmfleet.containers.entrypoint.routing import RoutesWatcher, RouteTable, StateDir, lora_name

TABLE = RouteTable("base", "server-1", {"medical": "v2", "legal": "v1"})


def test_each_version_has_its_own_vllm_name():
    assert lora_name("medical", "v2") == "medical@v2"
    assert TABLE.lora_name_for("medical") == "medical@v2"
    assert TABLE.lora_name_for("finance") is None


def test_public_name_only_for_the_version_being_served():
    assert TABLE.public_name_of("medical@v2") == "medical"
    assert TABLE.public_name_of("medical@v1") is None
    assert TABLE.public_name_of("base") is None


def test_with_adapter_switches_and_retires_without_touching_the_original():
    switched = TABLE.with_adapter("medical", "v3").with_adapter("legal", None)

    assert switched.adapters == {"medical": "v3"}
    assert TABLE.adapters == {"medical": "v2", "legal": "v1"}


def test_routes_round_trip_through_the_state_dir(tmp_path: Path):
    state = StateDir(tmp_path / "state")

    state.write_routes(TABLE)

    assert state.read_routes() == TABLE
    assert [p.name for p in state.path.iterdir()] == ["routes.json"]


def test_watcher_sees_every_replacement(tmp_path: Path):
    state = StateDir(tmp_path)
    watcher = RoutesWatcher(state)
    assert watcher.current() is None

    seen = []
    for version in ("v1", "v2", "v3"):
        state.write_routes(TABLE.with_adapter("medical", version))
        seen.append(watcher.current().adapters["medical"])

    assert seen == ["v1", "v2", "v3"]


def test_drain_flag(tmp_path: Path):
    state = StateDir(tmp_path)
    assert not state.is_draining()

    state.start_draining()

    assert state.is_draining()
