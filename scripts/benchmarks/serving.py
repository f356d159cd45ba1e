"""The serving container on the CPU vLLM, with the stand-in model and moto's S3 server:

- boot: entrypoint (sync from S3, argv check, vLLM, middleware) vs a bare vLLM server of the
  same model and flags, from process start to /health 200 (ratio);
- promotion-to-served: registry promote() returning -> the server reporting the version
  (p50/p95 over PROMOTIONS promotions; the agent polls every POLL_SECONDS);
- swaps under load: requests for the adapter from LOAD_CLIENTS clients without pause while
  SWAPS versions are promoted one after another; failed requests (goal: 0).

    .venv/bin/python -m llmfleet.scripts.bench serving
"""

from __future__ import annotations

import logging
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import boto3
import httpx2
from moto.server import ThreadedMotoServer

from llmfleet.containers.entrypoint.vllm_command import serve_command
from llmfleet.model_store.contract.plan import vllm_argv
from llmfleet.model_store.store.registry import AdapterRegistry
from llmfleet.model_store.store.store import ModelStore, StoreLocation
from llmfleet.scripts.standin_model import (
    entrypoint_environment,
    make_lora_adapter,
    make_tiny_model,
    standin_serving_plan,
    wait_until_healthy,
)

MODEL, STAGE, BUCKET, PREFIX = "qwen3-small", "bench", "llmfleet-bench", "fleet"
BOOT_RUNS = 2
PROMOTIONS = 12
SWAPS = 10
LOAD_CLIENTS = 4
POLL_SECONDS = 1.0
BOOT_TIMEOUT = 300
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _boot_seconds(command: list[str], env: dict[str, str], port: int, log: Path) -> float:
    process = _start(command, env, log)
    try:
        return wait_until_healthy(f"http://127.0.0.1:{port}", process, timeout=BOOT_TIMEOUT, log=log)
    finally:
        _stop(process)


def _served_version(http: httpx2.Client, name: str) -> str | None:
    return http.get("/llmfleet/adapters").json()["adapters"].get(name)


def _promote_and_wait(registry: AdapterRegistry, http: httpx2.Client, name: str, version: str) -> float:
    # Promotions arriving right after a swap would all wait a full poll interval: land at a
    # random phase of the agent's cycle, as CI pipelines do.
    time.sleep(random.uniform(0, POLL_SECONDS))
    registry.promote(MODEL, STAGE, name, version, actor="bench")
    promoted = time.monotonic()
    while _served_version(http, name) != version:
        if time.monotonic() - promoted > 120:
            raise RuntimeError(f"{name} {version} not served 120 s after promotion")
        time.sleep(0.02)
    return time.monotonic() - promoted


class Load:
    """Clients sending chat requests for one adapter back to back, counting failures."""

    def __init__(self, url: str, model: str):
        self.url, self.model = url, model
        self.stop = threading.Event()
        self.ok = 0
        self.failed: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client) for _ in range(LOAD_CLIENTS)]

    def _client(self) -> None:
        body = {"model": self.model, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 16}
        with httpx2.Client(base_url=self.url, timeout=60) as http:
            while not self.stop.is_set():
                try:
                    response = http.post("/v1/chat/completions", json=body)
                    outcome = None if response.status_code == 200 else f"HTTP {response.status_code}: {response.text[:200]}"
                except httpx2.HTTPError as exc:
                    outcome = repr(exc)
                with self.lock:
                    if outcome is None:
                        self.ok += 1
                    else:
                        self.failed.append(outcome)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()


def run() -> None:
    work = Path(tempfile.mkdtemp(prefix="llmfleet-bench-"))
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto logs every S3 request otherwise
    moto_port = _free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{moto_port}"
    try:
        model_dir = make_tiny_model(work / "model")
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench")
        s3.create_bucket(Bucket=BUCKET)
        store = ModelStore(StoreLocation(BUCKET, PREFIX), s3)
        registry = AdapterRegistry(store)
        store.upload_model(model_dir, MODEL, "main", uploader="bench")
        versions = [f"v{i}" for i in range(1, PROMOTIONS + SWAPS + 2)]
        for index, version in enumerate(versions):
            adapter = make_lora_adapter(model_dir, work / "adapters" / version, seed=index, base_model_name=MODEL)
            store.publish_adapter(adapter, MODEL, "medical", version=version, max_rank=16, uploader="bench")
        registry.promote(MODEL, STAGE, "medical", versions[0], actor="bench")
        plan = standin_serving_plan(model_dir, model_name=MODEL, stage=STAGE)
        base_env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **CREDENTIALS}

        def entrypoint_env(port: int, run_id: str) -> dict[str, str]:
            return entrypoint_environment(
                plan, store_uri=f"s3://{BUCKET}/{PREFIX}", endpoint_url=endpoint, model_root=work / f"cache-{run_id}",
                port=port, server_id="bench-0", poll_seconds=POLL_SECONDS, base=base_env,
            )

        entrypoint_boots, bare_boots = [], []
        for run_index in range(BOOT_RUNS):
            port = _free_port()
            bare_argv = vllm_argv(plan.vllm, model=str(model_dir), port=port)
            bare_boots.append(_boot_seconds(serve_command(bare_argv), entrypoint_env(port, f"bare{run_index}"), port, work / "bare.log"))
            port = _free_port()
            command = [sys.executable, "-m", "llmfleet.containers.entrypoint"]
            entrypoint_boots.append(_boot_seconds(command, entrypoint_env(port, f"ep{run_index}"), port, work / "ep.log"))
        bare, entry = statistics.median(bare_boots), statistics.median(entrypoint_boots)
        print(f"boot to /health 200, median of {BOOT_RUNS}: bare vLLM {bare:.1f} s, entrypoint {entry:.1f} s "
              f"(S3 sync + argv check + vLLM + middleware), ratio {entry / bare:.2f}x")
        print(f"  runs: bare {[round(b, 1) for b in bare_boots]}, entrypoint {[round(e, 1) for e in entrypoint_boots]}")

        port = _free_port()
        log = work / "server.log"
        server = _start([sys.executable, "-m", "llmfleet.containers.entrypoint"], entrypoint_env(port, "server"), log)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_healthy(url, server, timeout=BOOT_TIMEOUT, log=log)
            with httpx2.Client(base_url=url, timeout=30) as http:
                latencies = [_promote_and_wait(registry, http, "medical", v) for v in versions[1 : PROMOTIONS + 1]]
                print(f"promotion -> served over {PROMOTIONS} promotions (agent polls every {POLL_SECONDS:g} s): "
                      f"p50 {_percentile(latencies, 50):.2f} s, p95 {_percentile(latencies, 95):.2f} s, "
                      f"max {max(latencies):.2f} s")
                with Load(url, "medical") as load:
                    for version in versions[PROMOTIONS + 1 : PROMOTIONS + 1 + SWAPS]:
                        _promote_and_wait(registry, http, "medical", version)
                print(f"swaps under load: {SWAPS} swaps, {LOAD_CLIENTS} clients, {load.ok + len(load.failed)} requests, "
                      f"{len(load.failed)} failed (goal 0)")
                for failure in load.failed[:5]:
                    print(f"  failed: {failure}")
        finally:
            _stop(server)
    finally:
        moto.stop()
