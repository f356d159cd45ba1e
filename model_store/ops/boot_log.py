"""How long a server took to start, phase by phase, from vLLM's start-up log. Pure.

`llmfleet verify` reads the figures from a GPU run's log; the serving container reads the
same lines as vLLM prints them, adds its own sync time, prints the phases and publishes
them as the `BootSeconds` metric. The planner's per-phase estimates (plan.py) are what
these figures are held to.

Log lines are vLLM 0.26's and 0.32's (vllm/v1/worker/gpu_worker.py, gpu_model_runner.py,
gpu/model_runner.py, model_loader/default_loader.py, v1/core/kv_cache_utils.py,
v1/engine/core.py; read 2026-12).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from llmfleet.model_store.contract.plan import Frozen

# What the server found of the compile cache: none published yet for its key, a verified
# copy, one that failed verification (compiled from scratch), a store it could not read,
# or the cache turned off (LLMFLEET_COMPILE_CACHE=off).
CacheOutcome = Literal["miss", "restored", "refused", "unavailable", "off"]


class BootFigures(Frozen):
    """What vLLM printed while it started (None: the line did not appear)."""

    weights_gib: float | None = None
    weights_load_seconds: float | None = None
    available_kv_gib: float | None = None
    kv_tokens: int | None = None
    max_concurrency: float | None = None
    graph_capture_seconds: float | None = None
    graph_gib: float | None = None
    engine_init_seconds: float | None = None
    compile_seconds: float | None = None


_PATTERNS: dict[str, tuple[str, Any]] = {
    "weights": (r"Model loading took ([\d.]+) GiB(?: memory)? and ([\d.]+) seconds", None),
    # The CPU build reports no memory figure, only the loader's time.
    "weights_load_seconds": (r"Loading weights took ([\d.]+) seconds", float),
    "available_kv_gib": (r"Available KV cache memory: (-?[\d.]+) GiB", float),
    "kv_tokens": (r"(?:GPU|CPU) KV cache size: ([\d,]+) tokens", lambda s: int(s.replace(",", ""))),
    "max_concurrency": (r"Maximum concurrency for [\d,]+ tokens per request: ([\d.]+)x", float),
    "graph": (r"Graph capturing finished in ([\d.]+) secs?, took (-?[\d.]+) GiB", None),
    "engine": (r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+) s(?:econds)?(?: \(compilation: ([\d.]+) s)?", None),
}


def parse_boot_log(text: str) -> BootFigures:
    """Figures from a vLLM server's start-up log (the last occurrence of each line wins)."""
    found: dict[str, Any] = {}
    for key, (pattern, convert) in _PATTERNS.items():
        matches = re.findall(pattern, text)
        if not matches:
            continue
        last = matches[-1]
        if key == "weights":
            found["weights_gib"], found["weights_load_seconds"] = float(last[0]), float(last[1])
        elif key == "graph":
            found["graph_capture_seconds"], found["graph_gib"] = float(last[0]), float(last[1])
        elif key == "engine":
            found["engine_init_seconds"] = float(last[0])
            found["compile_seconds"] = float(last[1]) if last[1] else None
        elif key not in found:
            found[key] = convert(last)
    return BootFigures(**found)


class BootRecord(Frozen):
    """One server's start, as the container prints it, publishes it and `status` shows it.

    `phases` (seconds) holds only what was measured: `sync` (weights and adapters from the
    store), `compile_cache` (fetching and verifying it), then vLLM's `engine_start` (Python,
    API server, engine process, building the model), `weights` (into device memory),
    `compile` (torch.compile; the GPU build reports it), `profile_and_graphs` (KV-cache
    profiling, CUDA graphs, warm-up) and `total` (container start to healthy).
    """

    phases: dict[str, float]
    compile_cache: CacheOutcome
    cache_version: str | None = None


def boot_record(
    figures: BootFigures,
    *,
    sync_seconds: float,
    cache_seconds: float,
    vllm_ready_seconds: float,
    compile_cache: CacheOutcome,
    cache_version: str | None = None,
) -> BootRecord:
    """The phases of one start: the container's own times plus what vLLM's log told.

    Engine start is what is left of vLLM's time to healthy once the phases it reports are
    taken out: process start-up, imports and the API server, which it does not time itself.
    """
    reported: dict[str, float] = {}
    if figures.weights_load_seconds is not None:
        reported["weights"] = figures.weights_load_seconds
    if figures.engine_init_seconds is not None:
        if figures.compile_seconds is not None:
            reported["compile"] = figures.compile_seconds
        reported["profile_and_graphs"] = max(0.0, figures.engine_init_seconds - (figures.compile_seconds or 0.0))
    phases = {
        "sync": sync_seconds,
        "compile_cache": cache_seconds,
        "engine_start": max(0.0, vllm_ready_seconds - sum(reported.values())),
        **reported,
        "total": sync_seconds + cache_seconds + vllm_ready_seconds,
    }
    return BootRecord(
        phases={name: round(seconds, 2) for name, seconds in phases.items()},
        compile_cache=compile_cache,
        cache_version=cache_version,
    )


def describe_boot(record: BootRecord) -> str:
    """One line for logs and `status`: `82 s (sync 3, weights 3, compile 36, ...); compile cache restored`."""
    phases = record.phases
    parts = ", ".join(f"{name.replace('_', ' ')} {phases[name]:.0f}" for name in phases if name != "total")
    cache = record.compile_cache + (f" ({record.cache_version})" if record.cache_version else "")
    return f"{phases['total']:.0f} s ({parts}); compile cache {cache}"
