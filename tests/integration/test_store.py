"""The store against moto's S3 server over HTTP: layout, immutability, verification, resumption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from llmfleet.model_store.store.adapters import AdapterRejected
from llmfleet.model_store.store.store import (
    MANIFEST_NAME,
    MAX_COMPILE_CACHE_BYTES,
    ModelStore,
    StoreError,
    StoreLocation,
    VersionExists,
    VersionManifest,
)
from tests.integration.conftest import (
    MALFORMED_ADAPTERS,
    MODEL,
    REVISION,
    TINY_CONFIG,
    Malformed,
    bucket_snapshot,
    write_adapter,
    write_model,
    write_trainer_output,
)

MIB = 1 << 20
STAGE, TARGET = "prod", "ecs"  # compile caches are stored per stage and target


def keys(s3, bucket: str) -> list[str]:
    return sorted(obj["Key"] for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def test_location_parsing() -> None:
    assert StoreLocation.parse("s3://llmfleet-store/team/a/") == StoreLocation("llmfleet-store", "team/a")
    assert StoreLocation.parse("s3://llmfleet-store").key("models", "tiny") == "models/tiny"
    assert StoreLocation("b", "p").key("registry", "tiny", "prod.json") == "p/registry/tiny/prod.json"
    for bad in ("llmfleet-store/x", "s3://", "s3://Upper_Case/x", "https://b/x"):
        with pytest.raises(StoreError, match=f"store {bad!r}"):
            StoreLocation.parse(bad)


def test_model_upload_lays_out_files_and_manifest_and_downloads_verified(store, s3, bucket, tmp_path) -> None:
    source = write_model(tmp_path / "model", weights_bytes=3 * MIB)
    (source / ".cache").mkdir()
    (source / ".cache" / "lock").write_text("tool state, not part of the model")
    (source / "original").mkdir()
    (source / "original" / "params.json").write_text('{"dim": 128}')
    reported = []
    manifest = store.upload_model(
        source, MODEL, REVISION, uploader="ci", source="Qwen/Qwen3-tiny", progress=lambda n, t: reported.append((n, t))
    )

    prefix = "fleet/models/tiny/main"
    assert keys(s3, bucket) == [
        f"{prefix}/{MANIFEST_NAME}",
        f"{prefix}/config.json",
        f"{prefix}/model.safetensors",
        f"{prefix}/original/params.json",
        f"{prefix}/tokenizer_config.json",
    ]
    stored = VersionManifest.from_json(
        s3.get_object(Bucket=bucket, Key=f"{prefix}/{MANIFEST_NAME}")["Body"].read(), "test"
    )
    assert stored == manifest
    assert (stored.kind, stored.model, stored.version, stored.uploader, stored.source) == (
        "model",
        MODEL,
        REVISION,
        "ci",
        "Qwen/Qwen3-tiny",
    )
    assert {f.path: f.size for f in stored.files} == {
        p.relative_to(source).as_posix(): p.stat().st_size
        for p in source.rglob("*")
        if p.is_file() and ".cache" not in p.parts
    }
    assert sum(n for n, _ in reported) == manifest.total_bytes and {t for _, t in reported} == {manifest.total_bytes}

    assert store.read_model_config(MODEL, REVISION) == TINY_CONFIG
    dest = store.download_model(MODEL, REVISION, tmp_path / "cache")
    for entry in manifest.files:
        assert (dest / entry.path).read_bytes() == (source / entry.path).read_bytes()
    assert json.loads((dest / MANIFEST_NAME).read_text())["version"] == REVISION
    assert not [p for p in dest.iterdir() if p.name.endswith(".partial")]


def test_a_version_is_immutable(store, s3, bucket, model_dir, tmp_path) -> None:
    store.upload_model(model_dir, MODEL, REVISION)
    before = bucket_snapshot(s3, bucket)
    other = write_model(tmp_path / "other", config=TINY_CONFIG | {"vocab_size": 1200})
    with pytest.raises(VersionExists, match="fleet/models/tiny/main already exists; versions are immutable"):
        store.upload_model(other, MODEL, REVISION)
    assert bucket_snapshot(s3, bucket) == before


def test_of_two_racing_uploads_of_one_version_the_first_to_finish_wins(store, store_uri, s3, bucket, tmp_path) -> None:
    """Both passed the existence check; the manifest's If-None-Match write refuses the later one."""
    rival = ModelStore.from_uri(store_uri)
    rival_source = write_model(tmp_path / "rival", config=TINY_CONFIG | {"vocab_size": 1200})
    finished = []

    def rival_finishes_first(done: int, total: int) -> None:
        if not finished:
            finished.append(rival.upload_model(rival_source, MODEL, REVISION, uploader="rival"))

    with pytest.raises(VersionExists, match="fleet/models/tiny/main was completed by another upload meanwhile"):
        store.upload_model(write_model(tmp_path / "mine"), MODEL, REVISION, progress=rival_finishes_first)
    assert store.model_manifest(MODEL, REVISION) == finished[0]


def test_model_upload_needs_a_config(store, tmp_path) -> None:
    (tmp_path / "weights").mkdir()
    with pytest.raises(StoreError, match="no config.json"):
        store.upload_model(tmp_path / "weights", MODEL, REVISION)


def test_readers_refuse_a_version_without_manifest(store, s3, bucket, tmp_path) -> None:
    s3.put_object(Bucket=bucket, Key="fleet/models/tiny/main/config.json", Body=json.dumps(TINY_CONFIG).encode())
    with pytest.raises(StoreError, match="no complete version at s3://.*/fleet/models/tiny/main"):
        store.read_model_config(MODEL, REVISION)
    with pytest.raises(StoreError, match="no complete version"):
        store.download_model(MODEL, REVISION, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_an_altered_object_fails_download_with_a_checksum_error(store, s3, bucket, tmp_path) -> None:
    manifest = store.upload_model(write_model(tmp_path / "model", weights_bytes=2 * MIB), MODEL, REVISION)
    weights = next(f for f in manifest.files if f.path == "model.safetensors")
    altered = bytearray(s3.get_object(Bucket=bucket, Key=weights.key)["Body"].read())
    altered[1000] ^= 0xFF  # same size, one flipped byte
    s3.put_object(Bucket=bucket, Key=weights.key, Body=bytes(altered))

    dest = tmp_path / "cache"
    with pytest.raises(StoreError, match=f"checksum mismatch for s3://{bucket}/{weights.key}"):
        store.download_model(MODEL, REVISION, dest)
    assert not (dest / "model.safetensors").exists()
    assert not (dest / MANIFEST_NAME).exists()
    assert not [p for p in dest.iterdir() if "partial" in p.name]


def test_a_shortened_config_is_refused_too(store, s3, bucket, model_dir) -> None:
    manifest = store.upload_model(model_dir, MODEL, REVISION)
    config = next(f for f in manifest.files if f.path == "config.json")
    s3.put_object(Bucket=bucket, Key=config.key, Body=b"{}")
    with pytest.raises(StoreError, match="checksum mismatch .* got 2 bytes"):
        store.read_model_config(MODEL, REVISION)


def test_download_reuses_verified_local_files_and_replaces_damaged_ones(store, tmp_path) -> None:
    source = write_model(tmp_path / "model", weights_bytes=MIB)
    store.upload_model(source, MODEL, REVISION)
    dest = store.download_model(MODEL, REVISION, tmp_path / "cache")
    (dest / "model.safetensors").write_bytes(b"damaged")
    reported = []
    store.download_model(MODEL, REVISION, dest, progress=lambda n, t: reported.append(n))
    assert (dest / "model.safetensors").read_bytes() == (source / "model.safetensors").read_bytes()
    assert sum(reported) == sum(p.stat().st_size for p in source.iterdir())


def test_a_manifest_path_cannot_escape_the_destination(store, s3, bucket, tmp_path) -> None:
    manifest = store.upload_model(write_model(tmp_path / "model"), MODEL, "evil")
    data = json.loads(manifest.to_json())
    data["version"] = "forged"
    data["files"][0]["path"] = "../../outside.json"
    s3.put_object(Bucket=bucket, Key="fleet/models/tiny/forged/_manifest.json", Body=json.dumps(data).encode())
    with pytest.raises(StoreError, match="escapes the version directory"):
        store.download_model(MODEL, "forged", tmp_path / "a" / "b")
    assert not (tmp_path / "outside.json").exists()


# --- adapters ---------------------------------------------------------------------------------


def test_publish_names_the_version_by_content_and_refuses_a_second_publish(
    store, uploaded_model, adapter_dir, tmp_path
) -> None:
    first = store.publish_adapter(adapter_dir, MODEL, "medical", uploader="ci")
    assert len(first.version) == 12 and first.kind == "adapter" and first.adapter == "medical"
    assert first.details["adapter"]["rank"] == 8 and first.details["model_revision"] == REVISION
    with pytest.raises(
        VersionExists, match=f"already exists.*this content is already published as version {first.version}"
    ):
        store.publish_adapter(adapter_dir, MODEL, "medical")
    second = store.publish_adapter(write_adapter(tmp_path / "v2", seed=1), MODEL, "medical")
    named = store.publish_adapter(write_adapter(tmp_path / "v3", seed=2), MODEL, "medical", version="2026-11-25.1")
    assert store.adapter_versions(MODEL, "medical") == [first.version, second.version, named.version]
    out = store.download_adapter(MODEL, "medical", second.version, tmp_path / "dl")
    assert (out / "adapter_model.safetensors").read_bytes() == (
        tmp_path / "v2" / "adapter_model.safetensors"
    ).read_bytes()


def test_trainer_leftovers_are_never_uploaded(store, s3, bucket, uploaded_model, tmp_path) -> None:
    published = store.publish_adapter(write_trainer_output(tmp_path / "out"), MODEL, "medical")
    stored = [k for k in keys(s3, bucket) if "/adapters/" in k]
    assert [k.rsplit("/", 1)[1] for k in stored] == [
        "README.md",
        MANIFEST_NAME,
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    recorded = store.adapter_manifest(MODEL, "medical", published.version).details["adapter"]
    assert recorded["left_out"] == ["checkpoint-500", "training_args.bin"]


def test_publish_needs_the_base_model_in_the_store(store, s3, bucket, adapter_dir) -> None:
    with pytest.raises(StoreError, match="model 'tiny' revision 'main': no complete version"):
        store.publish_adapter(adapter_dir, MODEL, "medical")
    assert bucket_snapshot(s3, bucket) == {}


def test_the_base_may_be_named_by_the_models_recorded_source(store, model_dir, tmp_path) -> None:
    store.upload_model(model_dir, MODEL, REVISION, source="Qwen/Qwen3-tiny")
    adapter = write_adapter(tmp_path / "a", base="Qwen/Qwen3-tiny")
    assert store.publish_adapter(adapter, MODEL, "medical").details["adapter"]["base_model"] == "Qwen/Qwen3-tiny"
    with pytest.raises(AdapterRejected, match="accepted: \\['tiny', '/data/tiny', 'Qwen/Qwen3-tiny'\\]"):
        store.publish_adapter(
            write_adapter(tmp_path / "b", base="Qwen/Qwen3-8B"), MODEL, "legal", accepted_bases=("/data/tiny",)
        )


@pytest.mark.parametrize("case", MALFORMED_ADAPTERS, ids=lambda c: c.id)
def test_a_malformed_adapter_is_refused_and_the_bucket_is_unchanged(
    store, s3, bucket, uploaded_model, tmp_path, case: Malformed
) -> None:
    before = bucket_snapshot(s3, bucket)
    with pytest.raises(AdapterRejected) as refused:
        store.publish_adapter(case.build(tmp_path / "adapter"), MODEL, case.name, version=case.version)
    assert refused.value.rule == case.rule
    assert str(refused.value).startswith(f"adapter rejected [{case.rule}]: ")
    assert bucket_snapshot(s3, bucket) == before


def test_rank_ceiling_is_applied_at_publish(store, s3, bucket, uploaded_model, tmp_path) -> None:
    before = bucket_snapshot(s3, bucket)
    with pytest.raises(AdapterRejected, match="r = 32 exceeds the model's lora.max_rank 16"):
        store.publish_adapter(write_adapter(tmp_path / "a", rank=32), MODEL, "medical", max_rank=16)
    assert bucket_snapshot(s3, bucket) == before


# --- interrupted uploads ----------------------------------------------------------------------

# A child process uploads with a progress callback that slows each chunk, like a thin uplink,
# so the parent can SIGKILL it while the weights are mid-way through a multipart upload.
UPLOADER = """
import sys, time
from llmfleet.model_store.store.store import ModelStore
store = ModelStore.from_uri(sys.argv[1])
store.upload_model(sys.argv[2], "tiny", "main", progress=lambda done, total: time.sleep(0.05))
print("finished", flush=True)
"""


def test_an_upload_killed_midway_leaves_no_version_and_a_rerun_completes_it(
    store, s3, bucket, store_uri, tmp_path
) -> None:
    source = write_model(tmp_path / "model", weights_bytes=40 * MIB)
    child = subprocess.Popen(
        [sys.executable, "-c", UPLOADER, store_uri, str(source)], env=os.environ.copy(), stdout=subprocess.PIPE
    )
    config_key = "fleet/models/tiny/main/config.json"
    try:
        deadline = time.monotonic() + 60
        mid_multipart = False
        while not mid_multipart and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
            uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
            parts = [
                s3.list_parts(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"]).get("Parts", []) for u in uploads
            ]
            mid_multipart = config_key in keys(s3, bucket) and any(parts)
        assert mid_multipart and child.poll() is None, "the upload was not caught mid-way"
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL

    # Nothing is visible: no manifest, no weights object, readers refuse the revision.
    assert "fleet/models/tiny/main/_manifest.json" not in keys(s3, bucket)
    assert "fleet/models/tiny/main/model.safetensors" not in keys(s3, bucket)
    with pytest.raises(StoreError, match="no complete version"):
        store.read_model_config(MODEL, REVISION)
    config_stored_at = s3.head_object(Bucket=bucket, Key=config_key)["LastModified"]

    manifest = store.upload_model(source, MODEL, REVISION)
    assert s3.head_object(Bucket=bucket, Key=config_key)["LastModified"] == config_stored_at  # not sent again
    assert {f.path for f in manifest.files} == {"config.json", "tokenizer_config.json", "model.safetensors"}
    dest = store.download_model(MODEL, REVISION, tmp_path / "cache")
    assert (dest / "model.safetensors").read_bytes() == (source / "model.safetensors").read_bytes()


def test_a_stale_object_with_other_content_is_replaced_on_resume(store, s3, bucket, model_dir) -> None:
    s3.put_object(Bucket=bucket, Key="fleet/models/tiny/main/config.json", Body=b"{}", Metadata={"sha256": "0" * 64})
    store.upload_model(model_dir, MODEL, REVISION)
    assert store.read_model_config(MODEL, REVISION) == TINY_CONFIG


def test_store_from_uri_uses_the_endpoint_from_the_environment(aws_env, bucket) -> None:
    store = ModelStore.from_uri(f"s3://{bucket}")
    assert store.client.meta.endpoint_url == aws_env
    assert store.adapter_versions(MODEL, "medical") == []


def _compile_cache(directory, marker: str):
    (directory / "vllm" / "torch_compile_cache" / "abc" / "rank_0_0").mkdir(parents=True)
    (directory / "vllm" / "torch_compile_cache" / "abc" / "rank_0_0" / "model").write_bytes(marker.encode() * 1000)
    (directory / "triton").mkdir()
    (directory / "triton" / "kernel.cubin").write_bytes(b"\x7fELF" + marker.encode())
    return directory


def test_compile_caches_are_versions_by_content_newest_last(store, s3, bucket, tmp_path) -> None:
    def publish(name: str, marker: str):
        return store.publish_compile_cache(
            _compile_cache(tmp_path / name, marker), MODEL, STAGE, TARGET, "k1", factors={"vllm": "0.26.0"}, uploader=name
        )

    first = publish("a", "one")
    again = publish("b", "one")
    time.sleep(1.1)  # S3's LastModified, which orders versions, counts seconds
    second = publish("c", "two")

    assert again == first  # two servers with the same content: one version, the first upload's
    assert first.version != second.version and first.kind == "compile-cache"
    assert first.details == {"key": "k1", "factors": {"vllm": "0.26.0"}}
    assert store.compile_cache_versions(MODEL, STAGE, TARGET, "k1") == [first.version, second.version]
    assert store.compile_cache_versions(MODEL, STAGE, TARGET, "other-key") == []
    assert store.compile_cache_versions(MODEL, "dev", TARGET, "k1") == []  # each stage and target its own
    assert store.compile_cache_versions(MODEL, STAGE, "sagemaker", "k1") == []
    assert f"fleet/compile-cache/{MODEL}/{STAGE}/{TARGET}/k1/{first.version}/triton/kernel.cubin" in keys(s3, bucket)

    restored = store.download_compile_cache(MODEL, STAGE, TARGET, "k1", second.version, tmp_path / "restored")
    assert (restored / "triton" / "kernel.cubin").read_bytes() == b"\x7fELFtwo"
    assert not (restored / MANIFEST_NAME).exists()  # only what vLLM wrote: nothing to leave out on republish


def test_a_damaged_compile_cache_is_refused_and_mended_by_the_same_content(store, s3, bucket, tmp_path) -> None:
    def publish(name: str, *, repair: bool = False):
        directory = _compile_cache(tmp_path / name, "one")
        return store.publish_compile_cache(directory, MODEL, STAGE, TARGET, "k2", factors={}, uploader=name, repair=repair)

    def download(name: str):
        return store.download_compile_cache(MODEL, STAGE, TARGET, "k2", manifest.version, tmp_path / name)

    manifest = publish("a")
    damaged = next(entry for entry in manifest.files if entry.path.endswith("model"))
    s3.put_object(Bucket=bucket, Key=damaged.key, Body=b"garbage")
    with pytest.raises(StoreError, match="checksum mismatch"):
        download("refused")

    # Without repair a second publish of the same content changes nothing; with it the copy is mended.
    publish("b")
    with pytest.raises(StoreError, match="checksum mismatch"):
        download("refused-again")
    assert publish("c", repair=True) == manifest
    restored = download("restored")
    assert (restored / damaged.path).read_bytes() == (tmp_path / "a" / damaged.path).read_bytes()


def test_an_empty_compile_cache_is_not_published(store, s3, bucket, tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    before = keys(s3, bucket)
    with pytest.raises(StoreError, match="empty"):
        store.publish_compile_cache(tmp_path / "empty", MODEL, STAGE, TARGET, "k3", factors={}, uploader="server-a")
    assert keys(s3, bucket) == before


def test_a_compile_cache_servers_would_refuse_is_not_published(store, s3, bucket, tmp_path) -> None:
    directory = _compile_cache(tmp_path / "large", "one")
    with (directory / "inductor.bin").open("wb") as handle:
        handle.truncate(MAX_COMPILE_CACHE_BYTES)  # sparse: large on paper, nothing on disk
    before = keys(s3, bucket)
    with pytest.raises(StoreError, match=f"at most {MAX_COMPILE_CACHE_BYTES}"):
        store.publish_compile_cache(directory, MODEL, STAGE, TARGET, "k4", factors={}, uploader="server-a")
    assert keys(s3, bucket) == before
