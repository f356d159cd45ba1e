"""Cold start with and without the compile cache in the store (moto's S3 server).

Each start gets a fresh disk (model root at the same path, TMPDIR, HOME: a new instance), so
nothing but the store carries over:

- CPU (`make bench`), through the serving container with the stand-in model (no LoRA, so
  the CPU build compiles): the cache off (every start before the cache existed); on with
  nothing stored (vLLM compiles, the server publishes); on again (restored and verified
  before vLLM starts). Phases from each server's own boot record.
- A GPU host with the CUDA build of vLLM: `python -m llmfleet.scripts.benchmarks.cold_start --fleet
  examples/gpu/fleet.yaml --model NAME [--record PATH]` starts that model's plan as
  `llmfleet verify` does (random weights from its locked config.json), once with an empty
  cache, publishes the cache through the container's code, restores it into a fresh
  directory, and starts again.

Prints the phases of each start and the ratio of the cached start to the cold one.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import boto3
import httpx2
from moto.server import ThreadedMotoServer

from llmfleet.containers.entrypoint.compile_cache import CompileCache, accelerator, cache_environment, installed_vllm_version
from llmfleet.containers.entrypoint.store_sync import StoreGateway
from llmfleet.containers.entrypoint.vllm_command import serve_argv, validate_argv
from llmfleet.model_store.ops import verify
from llmfleet.model_store.ops.boot_log import boot_record, BootRecord, describe_boot, parse_boot_log
from llmfleet.model_store.store.compile_cache import compile_cache_key
from llmfleet.model_store.planning.fleet import load_fleet_and_lock, plan_with_lock
from llmfleet.model_store.store.store import ModelStore, StoreLocation
from llmfleet.scripts.standin_model import entrypoint_environment, make_tiny_model, standin_serving_plan, wait_until_healthy
from llmfleet.scripts.verify_cli import Server, free_port, local_gpu, write_config

MODEL, STAGE, BUCKET, PREFIX = "qwen3-small", "bench", "llmfleet-bench", "fleet"
BOOT_TIMEOUT = 900
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class Store:
    """moto's S3 server with one bucket, for as long as the benchmark runs."""

    endpoint: str
    store: ModelStore
    server: ThreadedMotoServer

    @classmethod
    def start(cls) -> Store:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto logs every S3 request otherwise
        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        endpoint = f"http://127.0.0.1:{port}"
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench")  # fmt: skip
        s3.create_bucket(Bucket=BUCKET)
        return cls(endpoint, ModelStore(StoreLocation(BUCKET, PREFIX), s3), server)


def fresh_machine(work: Path) -> dict[str, str]:
    """TMPDIR and HOME emptied, at the same paths every time (as on a new instance): caches vLLM,
    torch or CUDA keep there do not carry over, and paths vLLM hashes into its own key stay."""
    home = work / "machine"
    shutil.rmtree(home, ignore_errors=True)
    (home / "tmp").mkdir(parents=True)
    return {"HOME": str(home), "TMPDIR": str(home / "tmp"), "XDG_CACHE_HOME": str(home / ".cache")}


def report(rows: list[tuple[str, BootRecord]]) -> None:
    for label, record in rows:
        print(f"{label}: {describe_boot(record)}")
    cached = rows[-1][1].phases["total"]
    for label, record in rows[:-1]:  # every start before the last compiled from scratch
        cold = record.phases["total"]
        print(f"cached start / {label}: {cached:.1f} s / {cold:.1f} s = {cached / cold:.2f}x")


def cpu_boots(work: Path, store: Store) -> list[tuple[str, BootRecord]]:
    """Three starts of the serving container on the stand-in: cache off, on (publishes), on (restores)."""
    model_dir = make_tiny_model(work / "model")
    store.store.upload_model(model_dir, MODEL, "main", uploader="bench")
    plan = standin_serving_plan(model_dir, model_name=MODEL, stage=STAGE, lora=False)
    base = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **CREDENTIALS}
    rows = []
    for label, cache in (("cache off", False), ("cache on, nothing stored", True), ("cache on, restored", True)):
        run = label.split(",")[-1].strip().replace(" ", "-")
        port = free_port()
        disk = work / "instance-disk"  # every instance mounts its disk at the same path (vLLM hashes the model's)
        shutil.rmtree(disk, ignore_errors=True)
        env = entrypoint_environment(plan, store_uri=f"s3://{BUCKET}/{PREFIX}", endpoint_url=store.endpoint,
                                     model_root=disk, port=port, compile_cache=cache, base=base)  # fmt: skip
        env.update(fresh_machine(work))
        log = work / f"{run}.log"
        process = subprocess.Popen([sys.executable, "-m", "llmfleet.containers.entrypoint"], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        try:
            wait_until_healthy(f"http://127.0.0.1:{port}", process, timeout=BOOT_TIMEOUT, log=log)
            record = _boot_record(f"http://127.0.0.1:{port}")
            if record.compile_cache == "miss":  # the next start needs what this one publishes
                _wait_for(log, "compile cache: published")
        finally:
            process.terminate()
            process.wait(timeout=120)
        rows.append((label, record))
    return rows


def _boot_record(url: str, timeout: float = 60) -> BootRecord:
    """The server's boot record, written just after vLLM first answers /health."""
    deadline = time.monotonic() + timeout
    while (boot := httpx2.get(f"{url}/llmfleet/adapters", timeout=10).json()["boot"]) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url}: no boot record {timeout} s after /health")
        time.sleep(0.5)
    return BootRecord.model_validate(boot)


def _wait_for(log: Path, line: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while line not in log.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{log}: no {line!r} within {timeout} s")
        time.sleep(1)


def gpu_boots(work: Path, store: Store, fleet: Path, model: str) -> list[tuple[str, BootRecord]]:
    """Two starts of `model` as `llmfleet verify` starts it: empty cache, then the published one restored."""
    manifest, lock = load_fleet_and_lock(fleet)
    plan = next(p for p in plan_with_lock(manifest, lock) if p.model_name == model)
    entry, gpu = lock.models[model], local_gpu()
    model_dir = write_config(work / "model", entry.model)
    draft_dir = str(write_config(work / "draft", entry.draft)) if entry.draft else None
    gateway = StoreGateway(store.store, plan, model_root=str(work / "root"), server_id="bench")
    key = compile_cache_key(plan, vllm_version=installed_vllm_version(), accelerator=accelerator(), model_path=str(model_dir))

    def boot(label: str, cache: CompileCache) -> tuple[float, str]:
        port = free_port()
        base = serve_argv(plan, model=str(model_dir), port=port, lora_modules={}, host="127.0.0.1")
        argv = verify.verify_argv(base, plan=plan, model_dir=str(model_dir), port=port,
                                  emulation=verify.emulate(plan, gpu), draft_dir=draft_dir, config="plan")  # fmt: skip
        validate_argv(argv)
        (work / label).mkdir()
        env = {**cache_environment(cache.directory), **fresh_machine(work)}
        server = Server(argv, plan, work / label, work / f"{label}.log", environment=env)
        try:
            seconds = server.wait_healthy(BOOT_TIMEOUT)
        finally:
            log = server.stop()
        if seconds is None:
            raise RuntimeError(f"{label} start failed; log tail:\n{log[-3000:]}")
        return seconds, log

    # One path for both, as on two instances: compiled artefacts may name their own location.
    cold = CompileCache(key, work / "compile-cache")
    cold.directory.mkdir(parents=True)
    cold_seconds, cold_log = boot("cold", cold)
    cold.publish(gateway)
    shutil.rmtree(cold.directory)
    warm = CompileCache(key, cold.directory)
    warm.restore(gateway)
    warm_seconds, warm_log = boot("warm", warm)
    print(f"{model} on {gpu.name}, vLLM {installed_vllm_version()}, compile cache key {key.key}")
    return [
        ("empty cache", _record(cold_log, cold_seconds, cold)),
        ("published cache restored", _record(warm_log, warm_seconds, warm)),
    ]


def _record(log: str, seconds: float, cache: CompileCache) -> BootRecord:
    return boot_record(parse_boot_log(log), sync_seconds=0.0, cache_seconds=cache.seconds, vllm_ready_seconds=seconds,
                       compile_cache=cache.outcome, cache_version=cache.version)  # fmt: skip


def measure(boots: Callable[[Path, Store], list[tuple[str, BootRecord]]], work: Path | None = None) -> list[tuple[str, BootRecord]]:
    """Run `boots` in `work` (default: a new temporary directory) against a fresh store; print the rows."""
    work = work or Path(tempfile.mkdtemp(prefix="llmfleet-bench-cold-"))
    store = Store.start()
    try:
        rows = boots(work, store)
    finally:
        store.server.stop()
    report(rows)
    return rows


def run() -> None:
    measure(cpu_boots)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Boot a GPU fleet's model with an empty and with a restored compile cache.")
    parser.add_argument("--fleet", type=Path, required=True, help="Fleet manifest with fleet.lock.json beside it.")
    parser.add_argument("--model", required=True, help="The model to start.")
    parser.add_argument("--record", type=Path, help="Write the boot records here as JSON.")
    parser.add_argument("--keep", type=Path, help="A new directory to work in and keep (vLLM's logs, the cache).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=False)
    rows = measure(lambda work, store: gpu_boots(work, store, args.fleet, args.model), args.keep)
    if args.record:
        args.record.write_text(json.dumps({label: record.model_dump() for label, record in rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
