"""Store throughput and registry latency against a local S3 endpoint (moto's server).

Uploads and downloads a 1 GiB model (four 256 MiB files) with `ModelStore` and with
`aws s3 cp --recursive` on the same data, then times `AdapterRegistry.promote`. The S3
server runs in its own process, as does the AWS CLI, so neither shares a GIL with the
store's transfer threads. The store's figures include what the CLI does not do: hashing
every file (sha256) before upload and verifying every byte after download.

Each transfer runs ROUNDS times, interleaved with the reference, and the median is
reported beside every run (a shared machine makes single runs noisy); figures
are MB/s (10^6 bytes/s) of model bytes. Without an `aws` executable beside this Python
the comparison falls back to a plain boto3 `upload_file`/`download_file` loop, and says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import numpy as np
from safetensors.numpy import save_file

from llmfleet.model_store.store.registry import AdapterRegistry
from llmfleet.model_store.store.store import ModelStore

MODEL_BYTES = 1 << 30
MODEL_FILES = 4
ROUNDS = 5
PROMOTIONS = 20
BUCKET = "llmfleet-bench"
# A small Qwen3-shaped config: promote latency needs published adapter versions for a base.
BENCH_CONFIG = {
    "model_type": "qwen3",
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 64,
    "vocab_size": 600,
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_s3(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server, endpoint
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"moto server did not listen on {endpoint} within 30 s")


@contextlib.contextmanager
def local_s3() -> Iterator[dict[str, str]]:
    """moto's S3 server in its own process, with this process's environment (boto3's credentials
    and AWS_ENDPOINT_URL) pointed at it until the block ends; yields that environment."""
    env = os.environ | {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    server, endpoint = _start_s3(env)
    env["AWS_ENDPOINT_URL"] = endpoint
    saved_environ = dict(os.environ)
    os.environ.update(env)
    try:
        yield env
    finally:
        os.environ.clear()
        os.environ.update(saved_environ)
        server.terminate()
        server.wait(timeout=10)


def _write_model(directory: Path) -> None:
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(BENCH_CONFIG))
    rng = np.random.default_rng(0)
    for index in range(MODEL_FILES):
        name = f"model-{index + 1:05d}-of-{MODEL_FILES:05d}.safetensors"
        with (directory / name).open("wb") as handle:
            for _ in range(MODEL_BYTES // MODEL_FILES // (64 << 20)):
                handle.write(rng.bytes(64 << 20))


def _write_adapter(directory: Path, seed: int) -> Path:
    directory.mkdir(parents=True)
    (directory / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "base_model_name_or_path": "bench", "r": 8, "target_modules": ["q_proj"]})
    )
    rng = np.random.default_rng(seed)
    stem = "base_model.model.model.layers.0.self_attn.q_proj"
    save_file(
        {
            f"{stem}.lora_A.weight": rng.standard_normal((8, 128)).astype(np.float16),
            f"{stem}.lora_B.weight": rng.standard_normal((128, 8)).astype(np.float16),
        },
        str(directory / "adapter_model.safetensors"),
    )
    return directory


def _timed(action: Callable[[], None]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _mb_per_s(seconds: float) -> float:
    return MODEL_BYTES / seconds / 1e6


def _runs(seconds: list[float]) -> str:
    return "/".join(f"{_mb_per_s(s):.0f}" for s in seconds)


def _empty_prefix(s3, prefix: str) -> None:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if objects:
            s3.delete_objects(Bucket=BUCKET, Delete={"Objects": objects})


def _reference_transfers(s3, env: dict[str, str], source: Path, work: Path) -> tuple[str, Callable, Callable]:
    """(label, upload(), download()) of the comparison tool on the same data."""
    aws = Path(sys.executable).with_name("aws")
    if aws.is_file():

        def upload() -> None:
            subprocess.run(
                [str(aws), "s3", "cp", "--recursive", "--quiet", str(source), f"s3://{BUCKET}/awscli/"],
                env=env,
                check=True,
            )

        def download() -> None:
            target = work / "awscli"
            subprocess.run(
                [str(aws), "s3", "cp", "--recursive", "--quiet", f"s3://{BUCKET}/awscli/", str(target)],
                env=env,
                check=True,
            )
            shutil.rmtree(target)

        return "aws s3 cp --recursive", upload, download

    def upload() -> None:
        for path in sorted(source.iterdir()):
            s3.upload_file(str(path), BUCKET, f"awscli/{path.name}")

    def download() -> None:
        target = work / "boto3"
        target.mkdir()
        for path in sorted(source.iterdir()):
            s3.download_file(BUCKET, f"awscli/{path.name}", str(target / path.name))
        shutil.rmtree(target)

    return "boto3 upload_file/download_file loop (no aws CLI installed)", upload, download


def run() -> None:
    with local_s3() as env:
        _run(env, env["AWS_ENDPOINT_URL"])


def _run(env: dict[str, str], endpoint: str) -> None:
    work = Path(tempfile.mkdtemp(prefix="llmfleet-bench-"))
    try:
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        store = ModelStore.from_uri(f"s3://{BUCKET}/store")
        source = work / "model"
        started = time.perf_counter()
        _write_model(source)
        generated = time.perf_counter() - started
        print(f"model: {MODEL_FILES} files, {MODEL_BYTES / 2**30:.0f} GiB (generated in {generated:.1f} s)")
        print(f"S3 endpoint: moto server at {endpoint}; median of {ROUNDS} interleaved rounds")

        label, reference_upload, reference_download = _reference_transfers(s3, env, source, work)
        target = work / "download"

        def store_download() -> None:
            store.download_model("bench", "main", target)
            shutil.rmtree(target)

        figures: dict[str, list[float]] = {}
        for _ in range(ROUNDS):  # interleaved, on an emptied bucket, so both see the same server state
            _empty_prefix(s3, "")
            for name, action in (
                ("store upload", lambda: store.upload_model(source, "bench", "main", uploader="bench")),
                ("reference upload", reference_upload),
                ("store download", store_download),
                ("reference download", reference_download),
            ):
                figures.setdefault(name, []).append(_timed(action))
        _empty_prefix(s3, "")
        median = {name: statistics.median(seconds) for name, seconds in figures.items()}
        print(f"reference: {label}")
        for direction in ("upload", "download"):
            ours, theirs = median[f"store {direction}"], median[f"reference {direction}"]
            runs = f"store {_runs(figures[f'store {direction}'])}, reference {_runs(figures[f'reference {direction}'])}"
            print(
                f"{direction:>8}: store {_mb_per_s(ours):6.1f} MB/s   reference {_mb_per_s(theirs):6.1f} MB/s   "
                f"ratio store/reference {theirs / ours:.2f}x   (each run, MB/s: {runs})"
            )

        base = work / "bench-base"
        base.mkdir()
        (base / "config.json").write_text(json.dumps(BENCH_CONFIG))
        store.upload_model(base, "bench", "main", uploader="bench")
        versions = [
            store.publish_adapter(_write_adapter(work / f"adapter-{seed}", seed), "bench", "medical").version
            for seed in (1, 2)
        ]
        registry = AdapterRegistry(store)
        latencies = []
        for index in range(PROMOTIONS):
            started = time.perf_counter()
            registry.promote("bench", "prod", "medical", versions[index % 2], actor="bench")
            latencies.append(time.perf_counter() - started)
        cuts = statistics.quantiles(latencies, n=20)
        print(
            f" promote: p50 {statistics.median(latencies) * 1e3:.1f} ms, p95 {cuts[18] * 1e3:.1f} ms over {PROMOTIONS} "
            "promotions (existence check + read + conditional write)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    run()
