"""vLLM's compile cache through the store (moto's S3): the first server compiles and publishes
it, the next one restores it (verified) before vLLM starts, and a corrupt one is refused while
the server still starts. The stand-in runs without LoRA here: with LoRA the CPU build does
not compile at all.

Three real starts, one after another (each on the cores alone), each on a fresh disk at the
same path, as new instances are: vLLM hashes the model's path into its own cache key.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from llmfleet.model_store.contract.plan import ServingPlan
from llmfleet.model_store.store.store import MANIFEST_NAME, VersionManifest
from llmfleet.scripts.standin_model import standin_serving_plan
from tests.e2e.conftest import MODEL, STAGE, Fleet, Server, boot_server, wait_until

PUBLISH_TIMEOUT_SECONDS = 120
TARGET = "ecs"  # the stand-in runs as an ECS task (scripts/standin_model.py: entrypoint_environment)


@pytest.fixture(scope="module")
def plan(fleet: Fleet) -> ServingPlan:
    return standin_serving_plan(fleet.model_dir, model_name=MODEL, stage=STAGE, lora=False)


def stored_versions(fleet: Fleet) -> dict[str, VersionManifest]:
    """Every complete compile-cache version of the model, all stored under its stage and
    target: `key/version` -> its manifest."""
    everything = fleet.store.location.key("compile-cache", MODEL) + "/"
    prefix = fleet.store.compile_cache_prefix(MODEL, STAGE, TARGET) + "/"
    found = {}
    for page in fleet.store.client.get_paginator("list_objects_v2").paginate(Bucket=fleet.store.location.bucket, Prefix=everything):
        for obj in page.get("Contents", []):
            assert obj["Key"].startswith(prefix), f"{obj['Key']} is outside this stage's and target's compile cache"
            parts = obj["Key"][len(prefix) :].split("/")
            if len(parts) == 3 and parts[2] == MANIFEST_NAME:
                key, version = parts[:2]
                found[f"{key}/{version}"] = fleet.store.compile_cache_manifest(MODEL, STAGE, TARGET, key, version)
    return found


def new_instance(fleet: Fleet, name: str, plan: ServingPlan) -> Server:
    """A server on a fresh disk mounted where every instance mounts it."""
    disk = instance_disk(fleet)
    shutil.rmtree(disk, ignore_errors=True)
    return boot_server(fleet, name, plan=plan, model_root=disk)


def instance_disk(fleet: Fleet) -> Path:
    return fleet.work / "instance-disk"


def boot_record(server: Server) -> dict:
    """The server's boot record (written just after vLLM answers /health)."""
    with server.client() as http:
        wait_until(lambda: http.get("/llmfleet/adapters").json()["boot"] is not None, "the boot record")
        return http.get("/llmfleet/adapters").json()["boot"]


def emitted_boot_phases(server: Server) -> dict[str, float]:
    """The BootSeconds EMF lines the server printed: phase -> seconds."""
    phases = {}
    for line in server.output().splitlines():
        if line.startswith("{") and '"BootSeconds"' in line:
            record = json.loads(line)
            phases[record["Phase"]] = record["BootSeconds"]
    return phases


@pytest.fixture(scope="module")
def cold(fleet: Fleet, plan: ServingPlan) -> dict:
    """The first server: nothing stored yet. Returns its boot record and what it published."""
    server = new_instance(fleet, "cold", plan)
    try:
        record = boot_record(server)
        wait_until(lambda: bool(stored_versions(fleet)), "the compile cache is published", PUBLISH_TIMEOUT_SECONDS)
        phases = emitted_boot_phases(server)
    finally:
        server.stop()
    return {"record": record, "published": stored_versions(fleet), "phases": phases}


@pytest.fixture(scope="module")
def warm(fleet: Fleet, plan: ServingPlan, cold: dict) -> dict:
    """The second server, on a fresh disk: the store holds the first one's cache."""
    server = new_instance(fleet, "warm", plan)
    try:
        return {"record": boot_record(server), "log": server.output(), "cache_root": instance_disk(fleet) / "_compile"}
    finally:
        server.stop()


def test_the_first_server_compiles_and_publishes_its_cache(cold: dict) -> None:
    assert cold["record"]["compile_cache"] == "miss"
    ((name, manifest),) = cold["published"].items()
    assert manifest.kind == "compile-cache" and manifest.files
    factors = manifest.details["factors"]
    assert factors["model"] == MODEL and factors["accelerator"].startswith("cpu")
    assert factors["vllm"][0].isdigit()
    assert name.split("/")[0] == manifest.details["key"]


def test_the_boot_phases_are_printed_as_metrics(cold: dict) -> None:
    phases = cold["phases"]
    assert {"sync", "compile_cache", "engine_start", "weights", "profile_and_graphs", "total"} <= set(phases)
    assert phases["total"] >= phases["engine_start"] + phases["profile_and_graphs"]
    assert cold["record"]["phases"] == phases


def test_the_next_server_restores_the_cache_before_vllm_starts(cold: dict, warm: dict) -> None:
    ((name, manifest),) = cold["published"].items()
    key, version = name.split("/")
    record = warm["record"]
    assert (record["compile_cache"], record["cache_version"]) == ("restored", version)
    restored = warm["cache_root"] / MODEL / key
    assert MANIFEST_NAME not in {path.name for path in restored.iterdir()}  # only what vLLM wrote
    # The compiled model vLLM saved on the first server, at the path vLLM derives from its own
    # configuration hash: the second server's vLLM found it there and loaded it. (The CPU build
    # of vLLM 0.32 then fails to use the loaded function and recompiles with TorchInductor's
    # graph cache, restored beside it, warm; the GPU build loads it directly.)
    (compiled,) = [e.path for e in manifest.files if e.path.startswith("vllm/torch_compile_cache/") and e.path.endswith("/model")]
    assert (restored / compiled).is_file()
    assert f"AOT compilation from path {restored / compiled}" in warm["log"] or f"load failure from {restored / compiled}" in warm["log"]


def test_a_corrupt_cache_is_refused_and_the_server_still_starts(fleet: Fleet, plan: ServingPlan, cold: dict, warm: dict) -> None:
    (key,) = {name.split("/")[0] for name in stored_versions(fleet)}
    newest = fleet.store.compile_cache_versions(MODEL, STAGE, TARGET, key)[-1]  # what the next server restores
    manifest = fleet.store.compile_cache_manifest(MODEL, STAGE, TARGET, key, newest)
    damaged = max(manifest.files, key=lambda entry: entry.size)
    bucket = fleet.store.location.bucket
    body = fleet.store.client.get_object(Bucket=bucket, Key=damaged.key)["Body"].read()
    fleet.store.client.put_object(Bucket=bucket, Key=damaged.key, Body=body[:-16] + bytes(16))

    server = new_instance(fleet, "refused", plan)
    try:
        record = boot_record(server)
        with server.client() as http:
            answer = http.post("/v1/completions", json={"model": MODEL, "prompt": "hello", "max_tokens": 4})
        assert answer.status_code == 200, answer.text
        restored = instance_disk(fleet) / "_compile" / MODEL / key / damaged.path
        assert "refused" in server.output() and damaged.key in server.output()
    finally:
        server.stop()
    assert record["compile_cache"] == "refused"
    assert record["cache_version"] is None
    # What vLLM compiled instead is never the damaged object's bytes.
    assert not restored.is_file() or restored.read_bytes() != body[:-16] + bytes(16)

