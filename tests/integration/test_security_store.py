"""The store is a trust boundary, against moto's S3: whatever another writer put in the
registry, a manifest or a compile cache, a server writes and deletes nothing outside its
caches, keeps serving what it served, and loads only what it checked itself.

Every test snapshots the whole temporary tree (caches, the model, and sentinels outside the
caches) before the hostile read and compares it after."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from llmfleet.containers.entrypoint.agent import AdapterAgent
from llmfleet.containers.entrypoint.compile_cache import CompileCache
from llmfleet.containers.entrypoint.routing import RouteTable, StateDir
from llmfleet.containers.entrypoint.settings import EntrypointError
from llmfleet.containers.entrypoint.store_sync import StoreGateway
from llmfleet.containers.entrypoint.supervisor import sync
from llmfleet.model_store.store.adapters import MAX_WEIGHTS_BYTES
from llmfleet.model_store.store.boot import adapter_cache
from llmfleet.model_store.store.compile_cache import compile_cache_key, CompileCacheKey
from llmfleet.model_store.contract.plan import ServingPlan
from llmfleet.model_store.store.registry import AdapterRegistry
from llmfleet.model_store.store.store import MANIFEST_NAME, MAX_MANIFEST_BYTES, ModelStore, StoreError, StoreRefused
from llmfleet.scripts.standin_model import standin_serving_plan
from tests.integration.conftest import MALFORMED_ADAPTERS, MODEL, Malformed, bucket_snapshot, write_adapter

STAGE = "prod"
REGISTRY_KEY = f"fleet/registry/{MODEL}/{STAGE}.json"
PRECIOUS = b"a file no server may touch"


def tree(root: Path) -> dict[str, object]:
    """Every path under `root`: a file's bytes, 'dir', or a link's target."""
    found: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        if path.is_symlink():
            found[relative] = ("link", os.readlink(path))
        elif path.is_dir():
            found[relative] = "dir"
        else:
            found[relative] = path.read_bytes()
    return found


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


@pytest.fixture
def sentinels(tmp_path: Path) -> Path:
    """A directory outside every cache, with a file: what a hostile path would write or delete."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_bytes(PRECIOUS)
    return victim


@pytest.fixture
def plan(model_dir: Path) -> ServingPlan:
    return standin_serving_plan(model_dir, model_name=MODEL, stage=STAGE, max_rank=16)


@dataclass
class Server:
    gateway: StoreGateway


@pytest.fixture
def server(store: ModelStore, plan: ServingPlan, uploaded_model: str, tmp_path: Path, sentinels: Path) -> Server:
    return Server(StoreGateway(store, plan, model_root=str(tmp_path / "root"), server_id="server-1"))


@pytest.fixture
def honest(store: ModelStore, uploaded_model: str, tmp_path: Path) -> str:
    """A published adapter version of `medical`, promoted on the stage."""
    version = store.publish_adapter(write_adapter(tmp_path / "honest"), MODEL, "medical", max_rank=16, uploader="ci").version
    AdapterRegistry(store).promote(MODEL, STAGE, "medical", version, actor="ci")
    return version


# --- hostile registry documents ------------------------------------------------------------------


def registry_document(adapters: object, **changes: object) -> bytes:
    document = {"format": 1, "model": MODEL, "stage": STAGE, "generation": 9, "adapters": adapters, "history": []}
    return json.dumps(document | changes).encode()


def entry(version: object, **changes: object) -> dict:
    return {"version": version, "previous_version": None, "fraction": 1.0} | changes


# Each builds a document from (tmp_path, the honest version). Relative to the adapter
# cache <root>/_adapters/tiny/<name>/<version>, four '..' reach tmp_path.
HOSTILE_REGISTRIES: dict[str, Callable[[Path, str], bytes]] = {
    "absolute-version": lambda tmp, v: registry_document({"medical": entry(str(tmp / "victim"))}),
    "dotdot-version": lambda tmp, v: registry_document({"medical": entry("../../../../victim")}),
    "dot-version": lambda tmp, v: registry_document({"medical": entry(".")}),
    "dotdot-name": lambda tmp, v: registry_document({"../../../victim": entry(v)}),
    "empty-name-and-version": lambda tmp, v: registry_document({"": entry("")}),
    "nul-in-name": lambda tmp, v: registry_document({"medi\0cal": entry(v)}),
    "name-of-10k-chars": lambda tmp, v: registry_document({"m" * 10_000: entry(v)}),
    "fraction-a-word": lambda tmp, v: registry_document({"medical": entry(v, fraction="half")}),
    "version-an-object": lambda tmp, v: registry_document({"medical": entry({"v": 1})}),
    "adapters-a-list": lambda tmp, v: registry_document([["medical", v]]),
    "another-models-document": lambda tmp, v: registry_document({"medical": entry(v)}, model="other"),
    "10-mb-document": lambda tmp, v: registry_document({"medical": entry(v)}, history=[{"actor": "x" * 1000}] * 10_000),
}


@pytest.mark.parametrize("hostile", HOSTILE_REGISTRIES.values(), ids=HOSTILE_REGISTRIES.keys())
def test_a_booting_server_refuses_a_hostile_registry_and_starts_unchanged(
    server: Server, honest: str, s3, bucket: str, tmp_path: Path, caplog, hostile
) -> None:
    assert sync(server.gateway).adapters["medical"][0] == honest  # an earlier start left its cache
    s3.put_object(Bucket=bucket, Key=REGISTRY_KEY, Body=hostile(tmp_path, honest))
    before = tree(tmp_path)
    caplog.clear()

    synced = sync(server.gateway)  # a restart: no exception, so no crash loop

    assert synced.adapters == {} and synced.refused == {}  # nothing of the document, the base model serves
    assert synced.etag == s3.head_object(Bucket=bucket, Key=REGISTRY_KEY)["ETag"]
    assert tree(tmp_path) == before
    (line,) = errors(caplog)
    assert REGISTRY_KEY in line and len(line) < 1000


@dataclass
class FakeVllm:
    """vLLM's runtime LoRA API as the agent uses it; records the calls."""

    calls: list[tuple[str, ...]] = field(default_factory=list)

    def load_adapter(self, lora_name: str, path: str) -> None:
        self.calls.append(("load", lora_name, path))

    def wait_idle(self, lora_name: str, timeout: float) -> bool:
        return True

    def unload_adapter(self, lora_name: str) -> None:
        self.calls.append(("unload", lora_name))


def running_agent(server: Server, tmp_path: Path) -> tuple[AdapterAgent, FakeVllm]:
    synced = sync(server.gateway)
    vllm = FakeVllm()
    routes = RouteTable(MODEL, "server-1", {name: version for name, (version, _) in synced.adapters.items()})
    agent = AdapterAgent(
        server.gateway, vllm, StateDir(tmp_path / "state"), routes, etag=synced.etag, refused=synced.refused,
        interval=1.0, unload_wait=0.0, stop=threading.Event(),
    )  # fmt: skip
    return agent, vllm


@pytest.mark.parametrize("hostile", HOSTILE_REGISTRIES.values(), ids=HOSTILE_REGISTRIES.keys())
def test_a_live_server_refuses_a_hostile_registry_and_keeps_serving(
    server: Server, honest: str, store: ModelStore, s3, bucket: str, tmp_path: Path, caplog, hostile
) -> None:
    agent, vllm = running_agent(server, tmp_path)
    s3.put_object(Bucket=bucket, Key=REGISTRY_KEY, Body=hostile(tmp_path, honest))
    before = tree(tmp_path)
    caplog.clear()

    agent.check_once()
    agent.check_once()  # the same document again: polled past, not read or logged again

    assert agent.serving() == {"medical": honest} and vllm.calls == []
    assert tree(tmp_path) == before
    assert len(errors(caplog)) == 1

    # Once the document is replaced, the agent follows the registry again.
    s3.delete_object(Bucket=bucket, Key=REGISTRY_KEY)
    newer = store.publish_adapter(write_adapter(tmp_path / "newer", seed=3), MODEL, "medical", max_rank=16).version
    AdapterRegistry(store).promote(MODEL, STAGE, "medical", newer, actor="ci")
    agent.check_once()
    assert agent.serving() == {"medical": newer}


# --- hostile manifests ------------------------------------------------------------------------------

PLANTED = f"fleet/adapters/{MODEL}/medical/v1"


def plant_copy(store: ModelStore, s3, bucket: str, version: str, change: Callable[[dict], None]) -> None:
    """The honest version's objects copied to `medical/v1`, with a manifest edited by `change`."""
    data = json.loads(store.adapter_manifest(MODEL, "medical", version).to_json())
    data["version"] = "v1"
    for entry in data["files"]:
        s3.copy_object(Bucket=bucket, Key=f"{PLANTED}/{entry['path']}", CopySource={"Bucket": bucket, "Key": entry["key"]})
        entry["key"] = f"{PLANTED}/{entry['path']}"
    change(data)
    s3.put_object(Bucket=bucket, Key=f"{PLANTED}/{MANIFEST_NAME}", Body=json.dumps(data).encode())


def _file(data: dict, name: str) -> dict:
    return next(entry for entry in data["files"] if entry["path"] == name)


def _base_config_as_adapter_config(data: dict) -> None:
    config = _file(data, "adapter_config.json")
    config["key"] = f"fleet/models/{MODEL}/main/config.json"


def _escaping(path: str) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        data["files"].append({"path": path, "key": f"{PLANTED}/{path}", "size": len(PRECIOUS), "sha256": hashlib.sha256(PRECIOUS).hexdigest()})

    return change


HOSTILE_MANIFESTS: dict[str, Callable[[dict], None]] = {
    "another-adapters-manifest": lambda data: data.update(adapter="legal"),
    "another-models-manifest": lambda data: data.update(model="other"),
    "a-model-manifest": lambda data: data.update(kind="model", adapter=None),
    "entry-key-outside-its-version": _base_config_as_adapter_config,
    "dotdot-path": _escaping("../../../../../victim/precious.txt"),
    "absolute-path": _escaping("/tmp/precious.txt"),
    "size-a-string": lambda data: _file(data, "README.md").update(size="x"),
    "size-negative": lambda data: _file(data, "README.md").update(size=-5),
    "weights-above-the-adapter-limit": lambda data: _file(data, "adapter_model.safetensors").update(size=MAX_WEIGHTS_BYTES + 1),
    "17-mib-document": lambda data: data.update(source="x" * (MAX_MANIFEST_BYTES + 1)),
}


@pytest.mark.parametrize("change", HOSTILE_MANIFESTS.values(), ids=HOSTILE_MANIFESTS.keys())
def test_a_hostile_manifest_is_refused_before_any_byte_is_written(
    server: Server, honest: str, store: ModelStore, s3, bucket: str, tmp_path: Path, change
) -> None:
    plant_copy(store, s3, bucket, honest, change)
    before = tree(tmp_path)

    with pytest.raises(EntrypointError, match="refused"):
        server.gateway.fetch_adapter("medical", "v1")

    assert tree(tmp_path) == before


def test_an_untouched_copy_is_served(server: Server, honest: str, store: ModelStore, s3, bucket: str) -> None:
    plant_copy(store, s3, bucket, honest, lambda data: None)
    path = server.gateway.fetch_adapter("medical", "v1")
    assert sorted(p.name for p in path.iterdir()) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]


# --- adapters are validated again on the server ---------------------------------------------------


def plant_raw(s3, bucket: str, directory: Path, version: str) -> None:
    """An adapter directory put into the store as raw objects with a true manifest: what a
    writer who skips `publish` (and its validation) can do."""
    prefix = f"fleet/adapters/{MODEL}/medical/{version}"
    files = []
    for path in sorted(p for p in directory.iterdir() if p.is_file() and not p.is_symlink()):
        body = path.read_bytes()
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{path.name}", Body=body)
        files.append({"path": path.name, "key": f"{prefix}/{path.name}", "size": len(body), "sha256": hashlib.sha256(body).hexdigest()})
    manifest = {
        "format": 1, "kind": "adapter", "model": MODEL, "version": version, "adapter": "medical", "files": files,
        "uploader": "raw", "created": "2026-11-25T00:00:00.000+00:00", "source": "raw", "details": {},
    }  # fmt: skip
    s3.put_object(Bucket=bucket, Key=f"{prefix}/{MANIFEST_NAME}", Body=json.dumps(manifest).encode())


# Adapters publish refuses, whose files can be planted as they are (a symlink or a nested
# directory cannot: the store holds flat objects; an oversized file is the manifest's check).
PLANTABLE = [
    case
    for case in MALFORMED_ADAPTERS
    if case.name == "medical" and case.version is None and case.id not in ("symlink", "nested-dir", "oversized-file")
]


@pytest.mark.parametrize("case", PLANTABLE, ids=lambda case: case.id)
def test_an_adapter_that_skipped_publish_is_refused_on_the_server(
    server: Server, uploaded_model: str, s3, bucket: str, tmp_path: Path, case: Malformed
) -> None:
    plant_raw(s3, bucket, case.build(tmp_path / "bad"), "v1")
    with pytest.raises(EntrypointError, match=f"refused on this server: adapter rejected \\[{case.rule}\\]"):
        server.gateway.fetch_adapter("medical", "v1")


def test_a_live_server_keeps_the_old_version_when_the_new_one_fails_validation(
    server: Server, honest: str, store: ModelStore, s3, bucket: str, tmp_path: Path, caplog
) -> None:
    agent, vllm = running_agent(server, tmp_path)
    bad = tmp_path / "bad"
    write_adapter(bad)
    (bad / "adapter_model.bin").write_bytes(b"\x80\x04\x95 a pickle that runs code")
    plant_raw(s3, bucket, bad, "v2")
    AdapterRegistry(store).promote(MODEL, STAGE, "medical", "v2", actor="ci")
    caplog.clear()

    agent.check_once()

    assert agent.serving() == {"medical": honest} and vllm.calls == []
    assert agent.refused == {"medical": "v2"}
    assert not (adapter_cache(server.gateway.model_root, MODEL) / "medical" / "v2").exists()  # its files are gone
    (line,) = errors(caplog)
    assert "adapter rejected [pickle]" in line


# --- compile caches ---------------------------------------------------------------------------------


@pytest.fixture
def cache_key(plan: ServingPlan) -> CompileCacheKey:
    return compile_cache_key(plan, vllm_version="0.0-test", accelerator="cpu test", model_path="/models/tiny")


def compiled(directory: Path, marker: bytes) -> Path:
    """What vLLM leaves in its cache directory, in small."""
    (directory / "vllm" / "torch_compile_cache" / "abc" / "rank_0_0").mkdir(parents=True)
    (directory / "vllm" / "torch_compile_cache" / "abc" / "rank_0_0" / "model").write_bytes(marker * 100)
    (directory / "triton").mkdir()
    (directory / "triton" / "kernel.so").write_bytes(b"\x7fELF" + marker)
    return directory


def plant_version(s3, bucket: str, prefix: str, version: str, files: dict[str, bytes], created: str) -> None:
    """A compile cache version written straight to the store, with a true manifest."""
    entries = []
    for path, body in files.items():
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{version}/{path}", Body=body)
        entries.append({"path": path, "key": f"{prefix}/{version}/{path}", "size": len(body), "sha256": hashlib.sha256(body).hexdigest()})
    manifest = {
        "format": 1, "kind": "compile-cache", "model": MODEL, "version": version, "adapter": None, "files": entries,
        "uploader": "someone", "created": created, "source": "planted", "details": {},
    }  # fmt: skip
    s3.put_object(Bucket=bucket, Key=f"{prefix}/{version}/{MANIFEST_NAME}", Body=json.dumps(manifest).encode())


POISON = {"vllm/torch_compile_cache/abc/rank_0_0/model": b"\x80\x04 a pickle that runs code"}


def test_the_restored_version_is_the_one_the_store_received_last_for_this_stage_and_target(
    server: Server, store: ModelStore, s3, bucket: str, tmp_path: Path, cache_key: CompileCacheKey
) -> None:
    prefix = store.compile_cache_prefix(MODEL, STAGE, "ecs", cache_key.key)
    plant_version(s3, bucket, prefix, "future", POISON, created="9999-12-31T23:59:59.999+00:00")
    time.sleep(1.1)  # S3's LastModified counts seconds
    published = store.publish_compile_cache(
        compiled(tmp_path / "compiled", b"honest"), MODEL, STAGE, "ecs", cache_key.key, factors={}, uploader="server-0"
    )
    # Written later, but by another stage's or target's servers: never read here.
    for stage, target in (("dev", "ecs"), (STAGE, "sagemaker")):
        plant_version(s3, bucket, store.compile_cache_prefix(MODEL, stage, target, cache_key.key), "later", POISON, created="9999")

    cache = CompileCache(cache_key, tmp_path / "root" / "_compile" / MODEL / cache_key.key)
    compiled(cache.directory, b"stray")  # left on the host by an earlier server
    (cache.directory / "vllm" / "planted.pkl").write_bytes(b"\x80\x04")
    cache.restore(server.gateway)

    assert (cache.outcome, cache.version) == ("restored", published.version)
    assert tree(cache.directory) == tree(tmp_path / "compiled")  # exactly the version: no stray file


def test_nothing_stored_leaves_an_empty_directory(server: Server, tmp_path: Path, cache_key: CompileCacheKey) -> None:
    cache = CompileCache(cache_key, tmp_path / "root" / "_compile" / MODEL / cache_key.key)
    compiled(cache.directory, b"stray")
    cache.restore(server.gateway)
    assert cache.outcome == "miss" and list(cache.directory.iterdir()) == []


def test_a_hostile_compile_cache_manifest_is_refused_and_nothing_restored(
    server: Server, store: ModelStore, s3, bucket: str, tmp_path: Path, cache_key: CompileCacheKey
) -> None:
    prefix = store.compile_cache_prefix(MODEL, STAGE, "ecs", cache_key.key)
    plant_version(s3, bucket, prefix, "outside", {"../../../../../../victim/precious.txt": b"overwritten"}, created="2026")
    cache = CompileCache(cache_key, tmp_path / "root" / "_compile" / MODEL / cache_key.key)
    before = tree(tmp_path / "victim")
    cache.restore(server.gateway)
    assert cache.outcome == "refused" and list(cache.directory.iterdir()) == []
    assert tree(tmp_path / "victim") == before


# --- the repair path ------------------------------------------------------------------------------


def _sentinel_entry(path: str) -> dict:
    return {"path": path, "size": len(PRECIOUS), "sha256": hashlib.sha256(PRECIOUS).hexdigest()}


REPAIR_PLANTS: dict[str, tuple[Callable[[Path], dict], bool]] = {
    # name: (the planted entry, given the sentinel's path; whether the whole repair is refused)
    "dotdot-path": (lambda sentinel: _sentinel_entry("../victim/precious.txt"), True),
    "absolute-path": (lambda sentinel: _sentinel_entry(str(sentinel)), True),
    "through-a-symlinked-directory": (lambda sentinel: _sentinel_entry("linked/precious.txt"), True),
    "a-local-file-with-other-bytes": (lambda sentinel: _sentinel_entry("triton/kernel.so"), False),
}


@pytest.mark.parametrize(("plant", "refused"), REPAIR_PLANTS.values(), ids=REPAIR_PLANTS.keys())
def test_the_repair_path_sends_nothing_a_planted_manifest_names(
    store: ModelStore, s3, bucket: str, tmp_path: Path, sentinels: Path, plant, refused: bool
) -> None:
    directory = compiled(tmp_path / "compiled", b"honest")
    (directory / "linked").symlink_to(sentinels, target_is_directory=True)  # not part of the version
    stored = store.publish_compile_cache(directory, MODEL, STAGE, "ecs", "k", factors={}, uploader="server-0")
    prefix = store.compile_cache_prefix(MODEL, STAGE, "ecs", "k", stored.version)
    data = json.loads(stored.to_json())
    planted = plant(sentinels / "precious.txt")
    data["files"] = [e for e in data["files"] if e["path"] != planted["path"]] + [{**planted, "key": f"{prefix}/{planted['path']}"}]
    s3.put_object(Bucket=bucket, Key=f"{prefix}/{MANIFEST_NAME}", Body=json.dumps(data).encode())
    s3.put_object(Bucket=bucket, Key=f"{prefix}/{planted['path']}", Body=b"damaged")  # what a repair would replace
    before = bucket_snapshot(s3, bucket)

    if refused:
        with pytest.raises(StoreError) as error:
            store.publish_compile_cache(directory, MODEL, STAGE, "ecs", "k", factors={}, uploader="server-1", repair=True)
        assert isinstance(error.value, StoreRefused)
    else:
        store.publish_compile_cache(directory, MODEL, STAGE, "ecs", "k", factors={}, uploader="server-1", repair=True)

    after = bucket_snapshot(s3, bucket)
    assert after == before  # nothing sent: no manifest rewritten, no object replaced
    assert not any(PRECIOUS in body for body in after.values())
