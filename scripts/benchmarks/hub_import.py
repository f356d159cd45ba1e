"""`llmfleet model import` throughput: a local Hugging Face Hub over HTTP into moto's S3 server.

Imports checkpoints of 256 MiB and 1 GiB (four safetensors-named files each) with
`model_store.store.hub_import.import_model`, each ROUNDS times (median reported); beside it, reads
the same bytes from the Hub alone (streamed and hashed, nothing sent) and uploads them from
local disk with `model upload` (the same S3 server), to show where the time goes. The Hub
(tests/integration/hub_server.py, files read from disk) and the S3 server run in their own
processes. It prints how the time grows from one size to the other, and what a 16 GB model
would take at the larger size's rate, with its part and request counts. Figures are MB/s
(10^6 bytes/s).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import numpy as np

from llmfleet.model_store.facts.hub import HubClient
from llmfleet.model_store.store.hub_import import (
    DEFAULT_PART_SIZE,
    FILE_WORKERS,
    HubRef,
    import_model,
    part_size_for,
    PARTS_IN_FLIGHT,
)
from llmfleet.model_store.store.store import ModelStore
from llmfleet.scripts.benchmarks.store import BENCH_CONFIG, _empty_prefix, local_s3

SIZES = (256 << 20, 1 << 30)
FILES = 4
ROUNDS = 3
BUCKET = "llmfleet-bench"
REPO = "bench/checkpoint"
TARGET = 16 * 10**9  # the 16 GB model asked about: extrapolated, never created


def _write_checkpoint(directory: Path, size: int) -> None:
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(BENCH_CONFIG))
    rng = np.random.default_rng(0)
    for index in range(FILES):
        with (directory / f"model-{index + 1:05d}-of-{FILES:05d}.safetensors").open("wb") as handle:
            for _ in range(size // FILES // (32 << 20)):
                handle.write(rng.bytes(32 << 20))


def _start_hub(directory: Path) -> tuple[subprocess.Popen, str]:
    repo_root = Path(__file__).resolve().parents[2]
    hub = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.hub_server", REPO, str(directory)],
        cwd=repo_root,
        env=os.environ | {"PYTHONPATH": str(repo_root)},
        stdout=subprocess.PIPE,
        text=True,
    )
    return hub, hub.stdout.readline().strip()  # the endpoint, printed once the files are hashed


def _read_only(hub: HubClient, commit: str, paths: list[str]) -> None:
    for path in paths:
        digest = hashlib.sha256()
        with hub.read_file(REPO, commit, path) as blocks:
            for block in blocks:
                digest.update(block)


def _requests(size_per_file: int, files: int) -> tuple[int, int]:
    """(parts, S3 requests) of an import: per large file, create + parts + complete, and a HEAD
    and a multipart listing before it; one PUT for the manifest."""
    part = part_size_for(size_per_file)
    parts = files * math.ceil(size_per_file / part)
    return parts, parts + files * 4 + 1


def run() -> None:
    with local_s3() as env:
        _run(env["AWS_ENDPOINT_URL"])


def _run(endpoint: str) -> None:
    work = Path(tempfile.mkdtemp(prefix="llmfleet-bench-hub-"))
    hubs: list[subprocess.Popen] = []
    try:
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        store = ModelStore.from_uri(f"s3://{BUCKET}/store")
        print(
            f"S3: moto server at {endpoint}; Hub: local hub process; part {DEFAULT_PART_SIZE >> 20} MiB, "
            f"{FILE_WORKERS} files and {PARTS_IN_FLIGHT} parts in flight; median of {ROUNDS} rounds"
        )
        medians = {}
        for size in SIZES:
            checkpoint = work / f"checkpoint-{size >> 20}"
            _write_checkpoint(checkpoint, size)
            process, hub_endpoint = _start_hub(checkpoint)
            hubs.append(process)
            hub = HubClient(endpoint=hub_endpoint)
            commit, files = hub.repo_files(REPO, None)
            paths = [f.path for f in files]
            imports, reads, uploads = [], [], []
            for _ in range(ROUNDS):
                _empty_prefix(s3, "")
                started = time.perf_counter()
                import_model(store, hub, HubRef(REPO, None), "bench", uploader="bench")
                imports.append(time.perf_counter() - started)
                started = time.perf_counter()
                _read_only(hub, commit, paths)
                reads.append(time.perf_counter() - started)
                started = time.perf_counter()
                store.upload_model(checkpoint, "bench", "from-disk", uploader="bench")
                uploads.append(time.perf_counter() - started)
            medians[size] = statistics.median(imports)
            parts, requests = _requests(size // FILES, FILES)
            print(
                f"{size >> 20:>5} MiB: import {size / medians[size] / 1e6:6.1f} MB/s ({medians[size]:.2f} s; runs "
                f"{'/'.join(f'{size / s / 1e6:.0f}' for s in imports)}), Hub read alone "
                f"{size / statistics.median(reads) / 1e6:6.1f} MB/s, `model upload` of the files from disk "
                f"{size / statistics.median(uploads) / 1e6:6.1f} MB/s; {parts} parts, ~{requests} S3 requests"
            )
        (small, large) = SIZES
        parts, requests = _requests(TARGET // FILES, FILES)
        print(
            f"{large // small}x the bytes took {medians[large] / medians[small]:.2f}x the time "
            f"(linear in bytes: {large // small}x; parts and S3 requests grow with bytes / part size)"
        )
        print(
            f"16 GB model (4 shards): ~{medians[large] * TARGET / large:.0f} s at the {large >> 20} MiB rate; "
            f"{parts} parts of {part_size_for(TARGET // FILES) >> 20} MiB, ~{requests} S3 requests; memory bounded by "
            f"{(FILE_WORKERS + PARTS_IN_FLIGHT) * DEFAULT_PART_SIZE >> 20} MiB of parts whatever the size"
        )
    finally:
        for process in hubs:
            process.terminate()
            process.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    run()
