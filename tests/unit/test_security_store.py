"""The store is input to a server: what it reads back (registry documents, manifests, S3
listings) is checked as publish checks it, and local paths built from it stay in their root.
The pure checks; tests/integration/test_security_store.py runs them against moto's S3."""

from __future__ import annotations

import copy
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from llmfleet.model_store.store.adapters import MAX_FILES, MAX_WEIGHTS_BYTES
from llmfleet.model_store.store.registry import MAX_REGISTRY_BYTES, RegistryError, RegistryRefused, RegistryState
from llmfleet.model_store.store.store import (
    checked_manifest,
    contained,
    MANIFEST_NAME,
    MAX_COMPILE_CACHE_BYTES,
    MAX_MANIFEST_BYTES,
    StoreError,
    StoreRefused,
    VersionManifest,
    versions_by_upload,
)

WHERE = "s3://b/fleet/registry/tiny/prod.json"
HONEST_ENTRY = {"version": "v1", "previous_version": None, "fraction": 1.0}
HONEST = {"format": 1, "model": "tiny", "stage": "prod", "generation": 1, "adapters": {"medical": HONEST_ENTRY}, "history": []}


def document(**changes: object) -> bytes:
    return json.dumps({**HONEST, **changes}).encode()


def entry(**changes: object) -> dict:
    return {"medical": {**HONEST_ENTRY, **changes}}


def nested(depth: int) -> bytes:
    """A registry whose history nests `depth` lists: json.loads recurses once per level."""
    return document(history=[]).replace(b'"history": []', b'"history": ' + b"[" * depth + b"]" * depth)


HOSTILE_DOCUMENTS = {
    "absolute-version": document(adapters=entry(version="/usr/lib/python3/site-packages")),
    "dotdot-version": document(adapters=entry(version="../../tiny/main")),
    "dotdot-previous-version": document(adapters=entry(previous_version="..")),
    "dotdot-name": document(adapters={"..": HONEST_ENTRY}),
    "slash-in-name": document(adapters={"medical/../../x": HONEST_ENTRY}),
    "empty-name": document(adapters={"": HONEST_ENTRY}),
    "empty-version": document(adapters=entry(version="")),
    "nul-in-name": document(adapters={"med\0ical": HONEST_ENTRY}),
    "nul-in-version": document(adapters=entry(version="v1\0")),
    "newline-in-version": document(adapters=entry(version="v1\n")),
    "name-of-10k-chars": document(adapters={"a" * 10_000: HONEST_ENTRY}),
    "version-an-int": document(adapters=entry(version=7)),
    "version-null": document(adapters=entry(version=None)),
    "fraction-a-word": document(adapters=entry(fraction="all")),
    "fraction-true": document(adapters=entry(fraction=True)),
    "fraction-above-one": document(adapters=entry(fraction=2)),
    "fraction-nan": document(adapters=entry(fraction=float("nan"))),
    "entry-a-string": document(adapters={"medical": "v1"}),
    "entry-unknown-field": document(adapters=entry(path="/etc")),
    "entry-without-version": document(adapters={"medical": {"previous_version": None}}),
    "adapters-a-list": document(adapters=[["medical", HONEST_ENTRY]]),
    "generation-a-string": document(generation="3"),
    "generation-negative": document(generation=-1),
    "history-an-object": document(history={"0": {}}),
    "history-of-strings": document(history=["promote"]),
    "unknown-field": document(extra=1),
    "a-list": b"[]",
    "not-json": b"{\"format\": 1,",
    "not-utf8": b"\xff\xfe{}",
    "nested-100k-deep": nested(100_000),
    "10-mb-document": document(history=[{"time": "t", "actor": "x" * 1000}] * 10_000),
}


@pytest.mark.parametrize("text", HOSTILE_DOCUMENTS.values(), ids=HOSTILE_DOCUMENTS.keys())
def test_a_hostile_registry_document_is_refused_whole_in_one_bounded_line(text: bytes) -> None:
    with pytest.raises(RegistryRefused) as refused:
        RegistryState.from_json(text, etag='"e9"', where=WHERE)
    assert isinstance(refused.value, RegistryError)
    assert refused.value.etag == '"e9"'  # the server polls past it instead of reading it again
    message = str(refused.value)
    assert message.startswith(WHERE) and "\n" not in message and len(message) < 600


def test_the_size_bound_is_checked_before_parsing() -> None:
    assert len(HOSTILE_DOCUMENTS["10-mb-document"]) > MAX_REGISTRY_BYTES
    with pytest.raises(RegistryRefused, match=f"at most {MAX_REGISTRY_BYTES}"):
        RegistryState.from_json(b"x" * (MAX_REGISTRY_BYTES + 1), etag=None, where=WHERE)


def test_an_honest_document_still_parses() -> None:
    state = RegistryState.from_json(document(adapters={**entry(previous_version="v0", fraction=0.25), "legal": HONEST_ENTRY}), etag='"e"', where=WHERE)
    assert state.adapters["medical"].previous_version == "v0" and state.adapters["medical"].fraction == 0.25
    assert set(state.adapters) == {"medical", "legal"}


# --- contained: the one check before a write or delete -----------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "cache").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "cache" / "link").symlink_to(tmp_path / "outside")
    return tmp_path / "cache"


def test_a_path_inside_the_root_is_resolved(root: Path) -> None:
    assert contained(root, "medical", "v1") == root.resolve() / "medical" / "v1"
    assert contained(str(root), "a.b", "c_d-1") == root.resolve() / "a.b" / "c_d-1"


@pytest.mark.parametrize(
    "parts",
    [
        ("/etc",),
        ("medical", "/usr/lib/python3"),
        ("..",),
        ("medical", "..", ".."),
        ("medical", "../../outside"),
        ("",),
        ("medical", ""),
        (),
        (".",),
        ("med\0ical",),
        ("link",),  # a symlink out of the root
        ("link", "file"),
    ],
)
def test_a_path_outside_the_root_is_refused(root: Path, parts: tuple[str, ...]) -> None:
    with pytest.raises(StoreRefused):
        contained(root, *parts)


# --- manifests ------------------------------------------------------------------------------------

PREFIX = "fleet/adapters/tiny/medical/v1"
IDENTITY = ("adapter", "tiny", "v1", "medical")
SHA = "a" * 64


def manifest_data(files: list[dict] | None = None, **changes: object) -> dict:
    files = files if files is not None else [
        {"path": "adapter_config.json", "key": f"{PREFIX}/adapter_config.json", "size": 300, "sha256": SHA},
        {"path": "adapter_model.safetensors", "key": f"{PREFIX}/adapter_model.safetensors", "size": 4096, "sha256": SHA},
    ]
    return {
        "format": 1, "kind": "adapter", "model": "tiny", "version": "v1", "adapter": "medical", "files": files,
        "uploader": "ci", "created": "2026-11-25T00:00:00.000+00:00", "source": "/data/a", "details": {},
    } | changes  # fmt: skip


def with_file(**changes: object) -> dict:
    data = manifest_data()
    data["files"][0] = {**data["files"][0], **changes}
    return data


def check(data: dict, *, prefix: str = PREFIX, identity: tuple = IDENTITY) -> VersionManifest:
    manifest = VersionManifest.from_json(json.dumps(data), "s3://b/m")
    return checked_manifest(manifest, prefix=prefix, identity=identity, where="s3://b/m")


def test_an_honest_manifest_passes() -> None:
    assert [f.path for f in check(manifest_data()).files] == ["adapter_config.json", "adapter_model.safetensors"]


BAD_TYPES = {
    "size-a-string": with_file(size="x"),
    "size-a-bool": with_file(size=True),
    "size-a-float": with_file(size=1.5),
    "size-negative": with_file(size=-1),
    "size-absurd": with_file(size=10**30),
    "sha-not-hex": with_file(sha256="z" * 64),
    "sha-short": with_file(sha256="ab"),
    "path-an-int": with_file(path=3),
    "key-null": with_file(key=None),
    "entry-extra-field": with_file(mode=0o4755),
    "entry-a-string": manifest_data(files=["adapter_config.json"]),
    "files-an-object": manifest_data(files={"a": 1}),
    "kind-unknown": manifest_data(kind="plugin"),
    "adapter-an-int": manifest_data(adapter=1),
    "details-a-list": manifest_data(details=[]),
    "format-2": manifest_data(format=2),
    "format-true": manifest_data(format=True),
    "missing-created": {k: v for k, v in manifest_data().items() if k != "created"},
    "a-list": [],
}


@pytest.mark.parametrize("data", BAD_TYPES.values(), ids=BAD_TYPES.keys())
def test_a_manifest_of_wrong_types_is_a_store_error_never_a_type_error(data) -> None:
    with pytest.raises(StoreRefused, match="not a valid _manifest.json"):
        VersionManifest.from_json(json.dumps(data), "s3://b/m")


def test_manifest_documents_are_bounded_before_parsing() -> None:
    with pytest.raises(StoreRefused, match=f"at most {MAX_MANIFEST_BYTES}"):
        VersionManifest.from_json(b" " * (MAX_MANIFEST_BYTES + 1), "s3://b/m")
    with pytest.raises(StoreRefused, match="not a valid"):
        VersionManifest.from_json(b"[" * 100_000 + b"]" * 100_000, "s3://b/m")


def _adapter_files(count: int) -> list[dict]:
    return [{"path": f"f{n}.json", "key": f"{PREFIX}/f{n}.json", "size": 1, "sha256": SHA} for n in range(count)]


HOSTILE_MANIFESTS = {
    "another-adapter": (manifest_data(adapter="legal"), "expected adapter"),
    "another-model": (manifest_data(model="other"), "expected adapter"),
    "another-version": (manifest_data(version="v2"), "expected adapter"),
    "another-kind": (manifest_data(kind="model", adapter=None), "expected adapter"),
    "key-of-the-base-model": (with_file(key="fleet/models/tiny/main/config.json"), "outside its version"),
    "key-of-another-version": (with_file(key="fleet/adapters/tiny/medical/v2/adapter_config.json"), "outside its version"),
    "key-of-the-registry": (with_file(path="prod.json", key="fleet/registry/tiny/prod.json"), "outside its version"),
    "dotdot-path": (with_file(path="../../v2/adapter_config.json", key=f"{PREFIX}/../../v2/adapter_config.json"), "escapes"),
    "absolute-path": (with_file(path="/etc/cron.d/x", key=f"{PREFIX}//etc/cron.d/x"), "escapes"),
    "dot-path": (with_file(path="./adapter_config.json", key=f"{PREFIX}/./adapter_config.json"), "escapes"),
    "nul-in-path": (with_file(path="a\0b", key=f"{PREFIX}/a\0b"), "escapes"),
    "path-of-10k-chars": (with_file(path="a" * 10_000, key=f"{PREFIX}/{'a' * 10_000}"), "escapes"),
    "lists-its-own-manifest": (with_file(path=MANIFEST_NAME, key=f"{PREFIX}/{MANIFEST_NAME}"), "manifest itself"),
    "lists-a-file-twice": (manifest_data(files=_adapter_files(1) * 2), "listed twice"),
    "adapter-in-a-subdirectory": (with_file(path="sub/adapter_config.json", key=f"{PREFIX}/sub/adapter_config.json"), "flat"),
    "adapter-weights-too-large": (
        manifest_data(files=[{"path": "adapter_model.safetensors", "key": f"{PREFIX}/adapter_model.safetensors", "size": MAX_WEIGHTS_BYTES + 1, "sha256": SHA}]),
        "at most",
    ),
    "adapter-config-too-large": (with_file(size=(1 << 20) + 1), "at most"),
    "adapter-of-too-many-files": (manifest_data(files=_adapter_files(MAX_FILES + 1)), f"at most {MAX_FILES}"),
}


@pytest.mark.parametrize(("data", "message"), HOSTILE_MANIFESTS.values(), ids=HOSTILE_MANIFESTS.keys())
def test_a_hostile_manifest_is_refused(data: dict, message: str) -> None:
    with pytest.raises(StoreRefused, match=message) as refused:
        check(data)
    assert len(str(refused.value)) < 600


def test_a_compile_cache_is_bounded_in_total() -> None:
    prefix = "fleet/compile-cache/tiny/prod/ecs/k/abc"
    files = [{"path": f"triton/{n}.so", "key": f"{prefix}/triton/{n}.so", "size": 1 << 30, "sha256": SHA} for n in range(5)]
    data = manifest_data(files=files, kind="compile-cache", adapter=None, version="abc")
    identity = ("compile-cache", "tiny", "abc", None)
    with pytest.raises(StoreRefused, match=f"at most {MAX_COMPILE_CACHE_BYTES}"):
        check(data, prefix=prefix, identity=identity)
    assert check(copy.deepcopy(data) | {"files": files[:3]}, prefix=prefix, identity=identity).total_bytes == 3 << 30


def test_a_model_revision_may_be_large_and_nested() -> None:
    prefix = "fleet/models/tiny/main"
    files = [{"path": f"shards/model-{n}.safetensors", "key": f"{prefix}/shards/model-{n}.safetensors", "size": 50 << 30, "sha256": SHA} for n in range(40)]
    data = manifest_data(files=files, kind="model", adapter=None, version="main")
    assert len(check(data, prefix=prefix, identity=("model", "tiny", "main", None)).files) == 40


def test_refusals_are_store_errors() -> None:
    assert issubclass(StoreRefused, StoreError)


# --- which compile cache version is restored -------------------------------------------------------


def listed(key: str, second: int) -> dict:
    return {"Key": key, "LastModified": datetime(2026, 11, 25, 0, 0, second, tzinfo=UTC)}


def test_versions_are_ordered_by_the_stores_own_upload_time() -> None:
    parent = "fleet/compile-cache/tiny/prod/ecs/k"
    listing = [
        listed(f"{parent}/bbb/{MANIFEST_NAME}", 1),
        listed(f"{parent}/bbb/vllm/model", 1),
        listed(f"{parent}/aaa/{MANIFEST_NAME}", 3),
        listed(f"{parent}/ccc/{MANIFEST_NAME}", 2),
        listed(f"{parent}/ddd/vllm/model", 9),  # no manifest: not a version
        listed(f"{parent}/eee/sub/{MANIFEST_NAME}", 9),  # not directly under the key
        listed(f"{parent}/../{MANIFEST_NAME}", 9),  # an S3 key may hold '..': never a version
        listed(f"{parent}/{'x' * 100}/{MANIFEST_NAME}", 9),
    ]
    assert versions_by_upload(listing, parent) == ["bbb", "ccc", "aaa"]
    # Same second: by name, whatever their manifests claim.
    assert versions_by_upload([listed(f"{parent}/b/{MANIFEST_NAME}", 1), listed(f"{parent}/a/{MANIFEST_NAME}", 1)], parent) == ["a", "b"]


def test_contained_only_computes_a_path(root: Path) -> None:
    before = sorted(os.listdir(root.parent))
    contained(root, "new", "dir")
    assert sorted(os.listdir(root.parent)) == before and not (root / "new").exists()
