"""The registry against moto's S3 server: round trips, conditional writes, racing promoters."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import llmfleet.model_store.store.registry as registry_module
from llmfleet.model_store.store.registry import (
    AdapterEntry,
    AdapterRegistry,
    adapters_for_server,
    RegistryConflict,
    RegistryError,
)
from llmfleet.model_store.store.store import ModelStore, StoreError
from tests.integration.conftest import MODEL, bucket_snapshot, write_adapter

STAGE = "prod"


def publish(store: ModelStore, tmp_path: Path, name: str = "medical", seed: int = 0) -> str:
    return store.publish_adapter(write_adapter(tmp_path / f"{name}-{seed}", seed=seed), MODEL, name).version


def test_publish_promote_history_rollback_round_trip(store, uploaded_model, tmp_path) -> None:
    registry = AdapterRegistry(store)
    v1, v2 = publish(store, tmp_path, seed=1), publish(store, tmp_path, seed=2)

    assert registry.state(MODEL, STAGE).generation == 0
    registry.promote(MODEL, STAGE, "medical", v1, actor="ci-1")
    state = registry.promote(MODEL, STAGE, "medical", v2, actor="ci-2")
    assert state.adapters == {"medical": AdapterEntry(v2, v1, 1.0)}
    assert registry.state(MODEL, STAGE) == state  # what was written is what is read

    back = registry.rollback(MODEL, STAGE, "medical", actor="oncall")
    assert back.adapters["medical"] == AdapterEntry(v1, None, 1.0)
    history = registry.history(MODEL, STAGE, "medical")
    assert [(h["generation"], h["actor"], h["action"], h["from"], h["to"]) for h in history] == [
        (1, "ci-1", "promote", None, v1),
        (2, "ci-2", "promote", v1, v2),
        (3, "oncall", "rollback", v2, v1),
    ]
    assert all(h["time"].endswith("+00:00") for h in history)

    registry.retire(MODEL, STAGE, "medical", actor="ci")
    assert registry.state(MODEL, STAGE).adapters == {}
    assert registry.history(MODEL, STAGE, "medical")[-1]["action"] == "retire"


def test_only_published_versions_can_be_promoted(store, s3, bucket, uploaded_model, tmp_path) -> None:
    registry = AdapterRegistry(store)
    v1 = publish(store, tmp_path)
    # Files without a manifest (an interrupted publish) are not a version.
    s3.put_object(Bucket=bucket, Key="fleet/adapters/tiny/medical/partial/adapter_config.json", Body=b"{}")
    before = bucket_snapshot(s3, bucket)
    for version in ("partial", "v9"):
        with pytest.raises(
            RegistryError, match=f"version '{version}' of model 'tiny' is not published.*published: \\['{v1}'\\]"
        ):
            registry.promote(MODEL, STAGE, "medical", version, actor="ci")
    assert bucket_snapshot(s3, bucket) == before


def test_poll_is_a_conditional_get(store, uploaded_model, tmp_path) -> None:
    registry = AdapterRegistry(store)
    assert registry.poll(MODEL, STAGE, None).generation == 0
    state = registry.promote(MODEL, STAGE, "medical", publish(store, tmp_path), actor="ci")
    assert registry.poll(MODEL, STAGE, state.etag) is None
    moved = registry.promote(MODEL, STAGE, "medical", publish(store, tmp_path, seed=1), fraction=0.5, actor="ci")
    polled = registry.poll(MODEL, STAGE, state.etag)
    assert polled == moved and polled.etag != state.etag


def test_a_staged_rollout_is_visible_to_servers(store, uploaded_model, tmp_path) -> None:
    registry = AdapterRegistry(store)
    v1, v2 = publish(store, tmp_path, seed=1), publish(store, tmp_path, seed=2)
    registry.promote(MODEL, STAGE, "medical", v1, actor="ci")
    state = registry.promote(MODEL, STAGE, "medical", v2, fraction=0.2, actor="ci")
    read_back = registry.state(MODEL, STAGE)
    assert read_back.adapters["medical"] == AdapterEntry(v2, v1, 0.2)
    served = [adapters_for_server(read_back, f"server-{n}")["medical"] for n in range(500)]
    assert set(served) == {v1, v2}
    assert served == [adapters_for_server(state, f"server-{n}")["medical"] for n in range(500)]


def test_stages_are_separate_documents(store, uploaded_model, tmp_path) -> None:
    registry = AdapterRegistry(store)
    registry.promote(MODEL, "staging", "medical", publish(store, tmp_path), actor="ci")
    assert registry.state(MODEL, STAGE).adapters == {}
    with pytest.raises(ValueError, match="stage '../prod' is not a safe path segment"):
        registry.state(MODEL, "../prod")


def test_twenty_racing_promoters_lose_no_update(store, uploaded_model, tmp_path) -> None:
    names = [f"adapter-{n:02d}" for n in range(20)]
    adapter = write_adapter(tmp_path / "adapter")
    versions = {name: store.publish_adapter(adapter, MODEL, name).version for name in names}
    start = threading.Barrier(len(names))
    failures = []

    def promoter(name: str) -> None:
        registry = AdapterRegistry(store)  # each pipeline has its own registry handle
        start.wait()
        try:
            registry.promote(MODEL, STAGE, name, versions[name], actor=f"pipeline-{name}")
        except (RegistryError, StoreError) as exc:  # surfaced below with the thread's name
            failures.append((name, exc))

    threads = [threading.Thread(target=promoter, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    state = AdapterRegistry(store).state(MODEL, STAGE)
    assert state.adapters == {name: AdapterEntry(versions[name], None, 1.0) for name in names}
    assert state.generation == 20
    assert [h["generation"] for h in state.history] == list(range(1, 21))
    assert sorted(h["name"] for h in state.history) == names
    assert all(h["actor"] == f"pipeline-{h['name']}" for h in state.history)


def test_a_writer_that_always_loses_gives_up_with_a_conflict(store, uploaded_model, tmp_path, monkeypatch) -> None:
    """Each attempt of `loser` is overtaken by a real write from `rival` between its read and its write."""
    monkeypatch.setattr(registry_module, "MAX_ATTEMPTS", 3)
    rival = AdapterRegistry(store)
    versions = [publish(store, tmp_path, name="legal", seed=seed) for seed in range(4)]
    rival_writes = iter(versions)

    def clock_with_a_rival_write() -> str:
        rival.promote(MODEL, STAGE, "legal", next(rival_writes), actor="rival")
        return "2026-11-25T12:00:00.000+00:00"

    loser = AdapterRegistry(store, clock=clock_with_a_rival_write, sleep=lambda seconds: None)
    with pytest.raises(RegistryConflict, match="another writer changed the registry on each of 3 attempts"):
        loser.promote(MODEL, STAGE, "medical", publish(store, tmp_path), actor="loser")
    state = rival.state(MODEL, STAGE)
    assert "medical" not in state.adapters and state.generation == 3
