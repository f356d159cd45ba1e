"""What a serving container fetches at boot, from where, into which path: one pure decision.

The entrypoint gathers the facts (its plan, the store it was given, whether SageMaker left a
copy of the revision on disk, what the registry promotes) and asks here; its executor
(`containers/entrypoint/store_sync.py`) carries the answer out and decides nothing itself.
Names read from the store are input: an adapter name or version becomes a path only once
checked as publish checks it and resolved inside the adapter cache.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from llmfleet.model_store.store.adapters import check_segment
from llmfleet.model_store.contract.layout import ADAPTER_CACHE, model_copy, model_key
from llmfleet.model_store.contract.plan import DeploymentPlan, ServingPlan
from llmfleet.model_store.store.store import contained, StoreError, StoreLocation, StoreRefused


@dataclass(frozen=True)
class Weights:
    """How the server gets its model revision, and the path or URI its server is given.

    `stream`: vLLM reads the store's prefix itself (`--load-format runai_streamer`);
    `verify`: SageMaker's copy at `path` is checked in place, nothing downloaded;
    `download`: the revision is downloaded and verified into `path`."""

    how: Literal["stream", "verify", "download"]
    path: str


@dataclass(frozen=True)
class AdapterFetch:
    name: str
    version: str
    path: Path  # an emptied directory of the adapter cache the version is downloaded into


@dataclass(frozen=True)
class Boot:
    """Everything boot fetches. `refused`: adapters whose names cannot become a path (name ->
    version, with why), left out before anything is written."""

    weights: Weights
    adapters: tuple[AdapterFetch, ...]
    refused: dict[str, tuple[str, str]]


def weights(plan: DeploymentPlan, store: StoreLocation, *, model_root: str, preloaded_copy: str | None) -> Weights:
    """Where the weights come from: the store's prefix when the plan streams them; the copy
    SageMaker made when there is one (`preloaded_copy`: a directory holding the revision's
    `_manifest.json`); else a download into the model root."""
    if plan.streams_weights:
        return Weights("stream", f"s3://{store.bucket}/{store.key(model_key(plan.model_name, plan.revision))}")
    if preloaded_copy is not None:
        return Weights("verify", preloaded_copy)
    return Weights("download", model_copy(model_root, plan.model_name, plan.revision))


def desired_adapters(plan: ServingPlan, promoted: Mapping[str, str]) -> dict[str, str]:
    """Adapter name -> version this server should serve: the registry's choice for it,
    except adapters the fleet manifest pins to a version, which keep their pin."""
    pinned = {ref.name: ref.version for ref in plan.adapters if ref.version}
    return {**promoted, **pinned}


def adapter_cache(model_root: str, model: str) -> Path:
    return Path(model_root) / ADAPTER_CACHE / model


def adapter_path(model_root: str, model: str, name: str, version: str) -> Path:
    """Where one adapter version lives: both names checked as publish checks them and the path
    resolved inside this model's adapter cache; StoreRefused otherwise."""
    try:
        check_segment("adapter name", name)
        check_segment("version", version, rule="version")
        return contained(adapter_cache(model_root, model), name, version)
    except (ValueError, StoreError) as exc:
        raise StoreRefused(f"adapter {name!r:.80} version {version!r:.80} refused: {exc}") from None


def decide_boot(
    plan: ServingPlan,
    store: StoreLocation,
    *,
    model_root: str,
    preloaded_copy: str | None,
    promoted: Mapping[str, str],
) -> Boot:
    """The whole boot of a text server: its weights, and the adapters it serves (`promoted`:
    the registry's choice for this server; none without LoRA)."""
    wanted = desired_adapters(plan, promoted) if plan.vllm.enable_lora else {}
    fetches, refused = [], {}
    for name, version in sorted(wanted.items()):
        try:
            fetches.append(AdapterFetch(name, version, adapter_path(model_root, plan.model_name, name, version)))
        except StoreRefused as exc:
            refused[name] = (version, str(exc))
    return Boot(weights(plan, store, model_root=model_root, preloaded_copy=preloaded_copy), tuple(fetches), refused)
