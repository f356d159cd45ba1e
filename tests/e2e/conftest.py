"""Real serving containers: the entrypoint and the CPU vLLM, fed from moto's S3 server with
a tiny random-weight model and peft adapters made here (once per session).

Each test file has its own store bucket and registry (module scope), so what one file
promotes never reaches another. Booting vLLM costs most of a minute on two cores, so the
tests of test_entrypoint.py share one server (module scope: it is gone before the next
file boots its own, so two vLLMs never compete for the cores); the tests that end a server
(drain, kill) start their own. Every file runs alone or in any order.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import httpx2
import psutil
import pytest

from llmfleet.model_store.contract.plan import ServingPlan
from llmfleet.model_store.store.registry import AdapterRegistry
from llmfleet.model_store.store.store import ModelStore, StoreLocation
from llmfleet.scripts.standin_model import (
    entrypoint_environment,
    make_lora_adapter,
    make_tiny_model,
    standin_serving_plan,
    wait_until_healthy,
)
from tests.conftest import REPO, free_port

MODEL = "qwen3-small"
REVISION = "main"
STAGE = "test"
PREFIX = "fleet"
BOOT_TIMEOUT_SECONDS = 300
SWAP_TIMEOUT_SECONDS = 60
# Adapters published before boot: name -> versions (each version its own random seed).
ADAPTER_SEEDS = {"medical": {"v1": 1, "v2": 11}, "legal": {"v1": 2}, "finance": {"v1": 3}}
ACTOR = "e2e"


@dataclass
class Fleet:
    """The store, registry and adapter sources the tests promote from."""

    store: ModelStore
    registry: AdapterRegistry
    plan: ServingPlan
    model_dir: Path
    work: Path  # this module's logs and caches
    endpoint: str

    @property
    def store_uri(self) -> str:
        return f"s3://{self.store.location.bucket}/{PREFIX}"

    def promote(self, name: str, version: str) -> None:
        self.registry.promote(MODEL, STAGE, name, version, actor=ACTOR)

    def rollback(self, name: str) -> None:
        self.registry.rollback(MODEL, STAGE, name, actor=ACTOR)

    def publish(self, name: str, version: str, *, seed: int, rank: int = 8, max_rank: int = 16) -> None:
        """Publish a fresh adapter (no-op when that version is already in the store)."""
        if self.store.adapter_version_exists(MODEL, name, version):
            return
        directory = self.model_dir.parent / "adapters" / name / version  # made once per session
        if not (directory / "adapter_config.json").is_file():
            make_lora_adapter(self.model_dir, directory, rank=rank, seed=seed, base_model_name=MODEL)
        self.store.publish_adapter(directory, MODEL, name, version=version, max_rank=max_rank, uploader=ACTOR)

    def corrupt(self, name: str, version: str) -> None:
        """Change bytes of a published version's weights behind the store's back (bit rot, tampering)."""
        key = self.store.location.key("adapters", MODEL, name, version, "adapter_model.safetensors")
        original = self.store.client.get_object(Bucket=self.store.location.bucket, Key=key)["Body"].read()
        self.store.client.put_object(Bucket=self.store.location.bucket, Key=key, Body=original[:-64] + bytes(64))

    def promote_bad_versions(self) -> None:
        """legal v2 corrupt in the store, finance v2 of a rank vLLM refuses: both promoted."""
        if not self.store.adapter_version_exists(MODEL, "legal", "v2"):
            self.publish("legal", "v2", seed=22)
            self.corrupt("legal", "v2")
        # Rank 32 passes the store's validation (max 64 here) but exceeds vLLM's --max-lora-rank 16.
        self.publish("finance", "v2", seed=33, rank=32, max_rank=64)
        self.promote("legal", "v2")
        self.promote("finance", "v2")


@dataclass
class Server:
    """A running entrypoint (and its vLLM child) on localhost."""

    process: subprocess.Popen
    port: int
    log: Path
    tmp: Path  # the entrypoint's TMPDIR: its state directory lives here

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, timeout: float = 60) -> httpx2.Client:
        return httpx2.Client(base_url=self.url, timeout=timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def family(self) -> list[psutil.Process]:
        """The entrypoint and every process under it (vLLM's API server, EngineCore, workers)."""
        try:
            leader = psutil.Process(self.process.pid)
            return [leader, *leader.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def vllm_group(self) -> int:
        """vLLM's process group id (the API server runs in its own session)."""
        (api_server,) = psutil.Process(self.process.pid).children()
        return os.getpgid(api_server.pid)

    def state_dirs(self) -> list[Path]:
        return sorted(self.tmp.glob("llmfleet-state-*"))

    def stop(self) -> None:
        """SIGTERM (drain), SIGKILL after a minute; whatever outlives the entrypoint is killed
        too, so a failed test leaves no vLLM holding cores for the next one."""
        family = self.family()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for process in living(family):
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(family, timeout=30)
        shutil.rmtree(self.tmp, ignore_errors=True)


def living(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running (a zombie holds nothing and is not counted)."""
    alive = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
    return alive


def outside_address() -> str:
    """This machine's own non-loopback interface address (found without sending a packet)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("10.255.255.255", 9))
        address = probe.getsockname()[0]
    assert not ipaddress.ip_address(address).is_loopback, "the test needs a non-loopback interface"
    return address


def connect_from_outside(port: int, timeout: float) -> socket.socket:
    """A connection to a server on 127.0.0.1 whose peer address, as the server sees it, is this
    machine's non-loopback one, as a load balancer's would be: the server's loopback-only rules
    are tested while every packet goes to loopback and nowhere else."""
    return socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(outside_address(), 0))


def client_from_outside(port: int, timeout: float = 60) -> httpx2.Client:
    """An HTTP client over `connect_from_outside`'s kind of connection."""
    transport = httpx2.HTTPTransport(local_address=outside_address())
    return httpx2.Client(base_url=f"http://127.0.0.1:{port}", transport=transport, timeout=timeout)


def processes_in_group(pgid: int) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
            if os.getpgid(process.pid) == pgid:
                found.append(process)
    return living(found)


def start_entrypoint(env: dict[str, str], log: Path) -> subprocess.Popen:
    handle = log.open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "llmfleet.containers.entrypoint"], cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT
    )


def wait_until(condition: Callable[[], bool], what: str, timeout: float = SWAP_TIMEOUT_SECONDS) -> None:
    """Poll `condition` until it holds; fail naming `what` after `timeout` (a bound, not a measurement)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout} s: {what}")
        time.sleep(0.2)


def wait_healthy(server: Server, timeout: float = BOOT_TIMEOUT_SECONDS) -> None:
    wait_until_healthy(server.url, server.process, timeout=timeout, log=server.log)


def boot_server(
    fleet: Fleet, name: str, *, plan: ServingPlan | None = None, model_root: Path | None = None, **environment: str
) -> Server:
    """A server named `name` (its log `<name>.log`), its disk `<name>-cache` unless `model_root`."""
    port = free_port()
    env = entrypoint_environment(
        plan or fleet.plan,
        store_uri=fleet.store_uri,
        endpoint_url=fleet.endpoint,
        model_root=model_root or fleet.work / f"{name}-cache",
        port=port,
        server_id=name,
        poll_seconds=0.5,
        metrics_seconds=2,
        base=aws_credentials(fleet.endpoint),
    )
    # Short, under /tmp: vLLM puts its ZeroMQ sockets in TMPDIR, whose paths may not pass
    # 107 bytes (a TMPDIR under pytest's numbered base directory did, at pytest-100).
    tmp = Path(tempfile.mkdtemp(prefix=f"{name[:16]}-", dir="/tmp"))  # noqa: S108 - short on purpose
    env["TMPDIR"] = str(tmp)
    env.update(environment)
    log = fleet.work / f"{name}.log"
    server = Server(start_entrypoint(env, log), port, log, tmp)
    try:
        wait_healthy(server)
    except BaseException:
        server.stop()
        raise
    return server


def aws_credentials(endpoint: str) -> dict[str, str]:
    """The process environment with dummy credentials for moto (never real ones)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
        }
    )
    return env


@pytest.fixture(scope="session")
def standin_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model, made once per session (adapters made from it are kept beside it)."""
    return make_tiny_model(tmp_path_factory.mktemp("standin") / "model")


@pytest.fixture(scope="module")
def fleet(moto_endpoint: str, standin_model: Path, tmp_path_factory: pytest.TempPathFactory, request) -> Fleet:
    """This file's own store (a bucket per module: what one file promotes never reaches
    another) with the tiny model and its adapters; medical v1 and legal v1 promoted."""
    module = request.module.__name__.rsplit(".", 1)[-1].replace("_", "-")
    work = tmp_path_factory.mktemp(module)
    model_dir = standin_model
    bucket = f"llmfleet-{module}"
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket=bucket)
    store = ModelStore(StoreLocation(bucket, PREFIX), s3)
    store.upload_model(model_dir, MODEL, REVISION, uploader=ACTOR)
    fleet = Fleet(
        store=store,
        registry=AdapterRegistry(store),
        plan=standin_serving_plan(model_dir, model_name=MODEL, stage=STAGE),
        model_dir=model_dir,
        work=work,
        endpoint=moto_endpoint,
    )
    for name, versions in ADAPTER_SEEDS.items():
        for version, seed in versions.items():
            fleet.publish(name, version, seed=seed)
    fleet.promote("medical", "v1")
    fleet.promote("legal", "v1")
    return fleet


@pytest.fixture(scope="module")
def server(fleet: Fleet) -> Iterator[Server]:
    """A serving container (entrypoint + vLLM) shared by one file's tests, polling the
    registry every 0.5 s; as on SageMaker (its metrics say so), on a free port."""
    server = boot_server(fleet, "server-a", LLMFLEET_TARGET="sagemaker")
    yield server
    server.stop()
