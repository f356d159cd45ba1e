"""`llmfleet model import` against a local Hugging Face Hub over HTTP (tests/integration/hub_server.py)
and moto's S3 server: streamed into the store byte for byte, killed midway and resumed without
sending a stored part again, refused in one line for gated and missing repos."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import boto3
import numpy as np
import pytest
import yaml
from safetensors.numpy import save

from llmfleet.model_store.facts.hub import HubClient
from llmfleet.model_store.store.hub_import import DEFAULT_PART_SIZE, import_model, parse_hub_ref
from llmfleet.model_store.store.store import MANIFEST_NAME, ModelStore, StoreError
from tests.integration.conftest import TINY_CONFIG, bucket_snapshot
from tests.integration.hub_server import LocalHub
from tests.integration.test_lock import LLMFLEET, cli_env, flat, llmfleet, one_clean_error

pytestmark = pytest.mark.integration

PUBLIC = "acme/tiny-chat"
GATED = "acme/tiny-gated"
TOKEN = "hf_local_test_token"
MAIN_SHA, OLD_SHA, GATED_SHA = ("a" * 40, "b" * 40, "c" * 40)
BIG = "model-00001-of-00002.safetensors"
# Two parts of the importer's size and a short last one: an interruption can fall after whole parts.
BIG_BYTES = 2 * DEFAULT_PART_SIZE + 3 * (1 << 20) + 17


def safetensors_of(rng: np.random.Generator, name: str, size: int) -> bytes:
    """A real safetensors file (the lock reads its header) of one U8 tensor of random bytes."""
    return save({name: np.frombuffer(rng.bytes(size), np.uint8)}, metadata={"format": "pt"})


def checkpoint_files() -> dict[str, bytes]:
    rng = np.random.default_rng(7)
    return {
        "config.json": json.dumps(TINY_CONFIG).encode(),
        "tokenizer.json": json.dumps({"model": {"type": "BPE"}}).encode(),
        "generation_config.json": b"{}",
        BIG: safetensors_of(rng, "model.embed_tokens.weight", BIG_BYTES),
        "model-00002-of-00002.safetensors": safetensors_of(rng, "lm_head.weight", 300_001),
        "empty.txt": b"",
        "pytorch_model.bin": b"\x80\x04 pickled duplicate of the weights",
        ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
    }


IMPORTED = sorted(set(checkpoint_files()) - {"pytorch_model.bin", ".gitattributes"})


def hub_repos() -> dict[str, dict]:
    files = checkpoint_files()
    old = {"config.json": files["config.json"], "model.safetensors": b"old weights"}
    return {
        PUBLIC: {"commits": {MAIN_SHA: files, OLD_SHA: old}, "refs": {"main": MAIN_SHA, "v1.0": OLD_SHA}},
        GATED: {"commits": {GATED_SHA: files}, "refs": {"main": GATED_SHA}, "gated": True},
    }


@pytest.fixture
def hub():
    with LocalHub(hub_repos(), token=TOKEN) as running:
        yield running


def model_import(hub: LocalHub, tmp: Path, *args: object, token: str | None = None):
    """`llmfleet model import ARGS` in a subprocess against the local Hub and moto."""
    return llmfleet("model", "import", *args, endpoint=hub.endpoint, tmp=tmp, token=token)


def stored_bytes(s3, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def entries(manifest) -> list[tuple[str, int, str]]:
    return [(f.path, f.size, f.sha256) for f in manifest.files]


def test_import_streams_the_checkpoint_into_the_store_as_model_upload_would_write_it(
    hub: LocalHub, store: ModelStore, store_uri: str, s3, bucket: str, tmp_path: Path
):
    result = model_import(hub, tmp_path, PUBLIC, "--model", "tiny", "--store", store_uri, "--json")

    assert result.returncode == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["version"] == MAIN_SHA  # named by the commit the Hub resolved `main` to
    assert summary["hub"] == {
        "repo": PUBLIC, "revision": "main", "commit": MAIN_SHA, "left_out": [".gitattributes", "pytorch_model.bin"]
    }
    source = checkpoint_files()
    manifest = store.model_manifest("tiny", MAIN_SHA)
    for name in IMPORTED:
        assert stored_bytes(s3, bucket, f"fleet/models/tiny/{MAIN_SHA}/{name}") == source[name], name
    # The same files uploaded from a local directory by `model upload` give the same entries.
    local = tmp_path / "local"
    local.mkdir()
    for name in IMPORTED:
        (local / name).write_bytes(source[name])
    assert entries(manifest) == entries(store.upload_model(local, "tiny", "from-disk"))
    assert manifest.source == PUBLIC  # adapters naming the Hub id as their base are accepted
    assert not (tmp_path / "hf-cache").exists()  # nothing was downloaded to local disk
    # The stored revision is what servers download and verify.
    downloaded = store.download_model("tiny", MAIN_SHA, tmp_path / "served")
    served = {p.name: p.read_bytes() for p in downloaded.iterdir() if p.name != MANIFEST_NAME}
    assert served == {name: source[name] for name in IMPORTED}


def test_a_tag_resolves_to_its_commit_and_a_store_revision_can_be_named(
    hub: LocalHub, store: ModelStore, store_uri: str, tmp_path: Path
):
    result = model_import(hub, tmp_path, f"{PUBLIC}@v1.0", "-m", "tiny", "-r", "v1", "--store", store_uri)

    assert result.returncode == 0, result.output
    manifest = store.model_manifest("tiny", "v1")
    assert manifest.details["hub"]["commit"] == OLD_SHA and manifest.details["hub"]["revision"] == "v1.0"
    assert [f.path for f in manifest.files] == ["config.json", "model.safetensors"]
    again = model_import(hub, tmp_path, f"{PUBLIC}@v1.0", "-m", "tiny", "-r", "v1", "--store", store_uri)
    one_clean_error(again, 1, "already exists", "immutable")


def test_a_gated_repo_imports_with_hf_token(hub: LocalHub, store: ModelStore, store_uri: str, tmp_path: Path):
    result = model_import(hub, tmp_path, GATED, "-m", "tiny", "--store", store_uri, token=TOKEN)

    assert result.returncode == 0, result.output
    assert [f.path for f in store.model_manifest("tiny", GATED_SHA).files] == IMPORTED


@pytest.mark.parametrize("token", [None, "hf_wrong"], ids=["no-token-401", "wrong-token-403"])
def test_a_gated_repo_without_access_is_refused_in_one_line_and_nothing_is_written(
    hub: LocalHub, store_uri: str, s3, bucket: str, tmp_path: Path, token: str | None
):
    result = model_import(hub, tmp_path, GATED, "-m", "tiny", "--store", store_uri, token=token)

    line = one_clean_error(result, 1, "gated")
    assert "HF_TOKEN" in line and "licence" in line
    assert bucket_snapshot(s3, bucket) == {}


@pytest.mark.parametrize(
    ("ref", "words"),
    [
        ("acme/no-such-model", ("no such model", "HF_TOKEN")),
        (f"{PUBLIC}@v9", ("revision 'v9' does not exist",)),
        ("not-a-repo", ("org/name",)),
    ],
    ids=["missing-repo", "missing-revision", "malformed"],
)
def test_a_missing_repo_or_revision_is_bad_input_in_one_line(
    hub: LocalHub, store_uri: str, s3, bucket: str, tmp_path: Path, ref: str, words: tuple[str, ...]
):
    result = model_import(hub, tmp_path, ref, "-m", "tiny", "--store", store_uri)

    one_clean_error(result, 2, *words)
    assert bucket_snapshot(s3, bucket) == {}


def _parts_in_s3(s3, bucket: str, key: str) -> dict[int, str]:
    uploads = [u for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) if u["Key"] == key]
    if not uploads:
        return {}
    parts = s3.list_parts(Bucket=bucket, Key=key, UploadId=uploads[0]["UploadId"]).get("Parts", [])
    return {p["PartNumber"]: p["ETag"] for p in parts}


def test_killed_mid_file_shows_no_version_and_the_rerun_sends_no_stored_part_again(
    hub: LocalHub, store: ModelStore, store_uri: str, s3, bucket: str, tmp_path: Path, aws_env: str
):
    key = f"fleet/models/tiny/{MAIN_SHA}/{BIG}"
    hub.stall_after[BIG] = 2 * DEFAULT_PART_SIZE + 4096  # two whole parts, then the connection hangs
    process = subprocess.Popen(
        [str(LLMFLEET), "model", "import", PUBLIC, "--model", "tiny", "--store", store_uri],
        cwd=tmp_path,
        env=cli_env(hub.endpoint, tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while len(_parts_in_s3(s3, bucket, key)) < 2 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    before = bucket_snapshot(s3, bucket)
    parts_before = _parts_in_s3(s3, bucket, key)
    assert sorted(parts_before) == [1, 2]
    assert not any(k.endswith(MANIFEST_NAME) for k in before)  # nothing visible: no version
    assert store.model_revisions("tiny") == []

    del hub.stall_after[BIG]
    sent: list[tuple[str, int | None]] = []
    client = boto3.client("s3", endpoint_url=aws_env)
    client.meta.events.register(
        "before-parameter-build.s3.UploadPart", lambda params, **_: sent.append((params["Key"], params["PartNumber"]))
    )
    client.meta.events.register(
        "before-parameter-build.s3.PutObject", lambda params, **_: sent.append((params["Key"], None))
    )
    progress: list[int] = []
    manifest = import_model(
        ModelStore(store.location, client), HubClient(endpoint=hub.endpoint), parse_hub_ref(PUBLIC), "tiny",
        progress=lambda done, total: progress.append(done), uploader="tests",
    )

    assert not {(key, n) for n in parts_before} & set(sent)  # no stored part sent again
    assert not {k for k in before if not k.startswith("multipart:")} & {k for k, _ in sent}  # nor a stored file
    assert (key, 3) in sent
    assert sum(progress) == manifest.total_bytes  # what was found stored counts as done
    source = checkpoint_files()
    for name in IMPORTED:
        assert stored_bytes(s3, bucket, f"fleet/models/tiny/{MAIN_SHA}/{name}") == source[name], name
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert [f.path for f in store.model_manifest("tiny", MAIN_SHA).files] == IMPORTED


def test_a_stored_part_that_differs_from_the_hub_bytes_is_sent_again(hub: LocalHub, store: ModelStore, s3, bucket: str):
    key = f"fleet/models/tiny/{MAIN_SHA}/{BIG}"
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256")["UploadId"]
    zeros = b"\0" * DEFAULT_PART_SIZE  # part 1 as an earlier run of other bytes left it
    s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=zeros, ChecksumAlgorithm="SHA256")

    import_model(store, HubClient(endpoint=hub.endpoint), parse_hub_ref(PUBLIC), "tiny")

    assert stored_bytes(s3, bucket, key) == checkpoint_files()[BIG]
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_into_the_fleets_store_and_its_lock_records_the_imported_revision(hub: LocalHub, bucket: str, tmp_path: Path):
    fleet = tmp_path / "fleet.yaml"
    model = {"name": "tiny", "revision": MAIN_SHA, "architecture": PUBLIC, "max_model_len": 1024}
    fleet.write_text(yaml.safe_dump({"name": "imported", "store": f"s3://{bucket}/fleet", "models": [model]}))

    result = model_import(hub, tmp_path, PUBLIC, "-m", "tiny", "-f", fleet)  # no --store: the fleet's

    assert result.returncode == 0, result.output
    record = json.loads(fleet.with_name("fleet.lock.json").read_text())["models"]["tiny"]["model"]
    assert (record["origin"], record["revision"]) == ("store", MAIN_SHA)
    assert record["config"] == TINY_CONFIG
    assert record["weights_bytes_by_dtype"] == {"U8": BIG_BYTES + 300_001}  # read from the stored headers
    assert f"wrote {fleet.with_name('fleet.lock.json')}" in flat(result.output)


def test_with_a_fleet_that_serves_another_revision_the_lock_is_left_alone(
    hub: LocalHub, store_uri: str, bucket: str, tmp_path: Path
):
    fleet = tmp_path / "fleet.yaml"
    model = {"name": "tiny", "architecture": PUBLIC}  # serves revision main of the store, not the commit
    fleet.write_text(yaml.safe_dump({"name": "imported", "store": f"s3://{bucket}/fleet", "models": [model]}))

    result = model_import(hub, tmp_path, PUBLIC, "-m", "tiny", "--store", store_uri, "-f", fleet)

    one_clean_error(result, 1, f"revision: {MAIN_SHA}", f"llmfleet lock -f {fleet}")
    assert not fleet.with_name("fleet.lock.json").exists()


class MislistingHub(HubClient):
    """A Hub whose listing gives the big file a sha256 its bytes do not have."""

    def repo_files(self, repo_id, revision):
        commit, files = super().repo_files(repo_id, revision)
        return commit, [replace(f, sha256="0" * 64) if f.path == BIG else f for f in files]


def test_bytes_that_differ_from_the_hubs_sha256_are_refused_and_not_stored(
    hub: LocalHub, store: ModelStore, s3, bucket: str
):
    with pytest.raises(StoreError, match=f"{BIG} read from the Hub has sha256 .* the Hub lists 0000"):
        import_model(store, MislistingHub(endpoint=hub.endpoint), parse_hub_ref(PUBLIC), "tiny")

    assert not any(key.endswith(MANIFEST_NAME) or BIG in key for key in bucket_snapshot(s3, bucket))
