"""The adapter registry: which adapter versions a stage of a model serves.

One JSON object per model and stage (`registry/<model>/<stage>.json`) with a generation
number and the history of every change. Every change is a compare-and-swap on the
object's ETag (`If-Match`; creation with `If-None-Match: *`): a promoter that loses a race
re-reads and applies its change to the fresh state, so concurrent CI pipelines never lose
an update. The transitions themselves (`promoted`, `rolled_back`, `retired`) and the
per-server choice (`adapters_for_server`) are pure functions.

Servers read the document as input: every name and version in it is checked as publish
checks them before it becomes a local path, and a document that fails is refused whole
(`RegistryRefused`), so the server keeps serving what it serves.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from botocore.exceptions import ClientError

from llmfleet.model_store.store.adapters import check_segment
from llmfleet.model_store.errors import EXIT_REFUSED, LlmfleetError
from llmfleet.model_store.store.store import (
    is_missing_error,
    is_precondition_failed,
    MIB,
    ModelStore,
    STAGE_PATTERN,
    StoreError,
)

REGISTRY_FORMAT = 1
# Each change adds ~250 bytes of history: 4 MiB holds ~16k promotions. A server reads no
# more than this (a larger document is refused unread) and a promoter writes no more.
MAX_REGISTRY_BYTES = 4 * MIB
_DOCUMENT_FIELDS = {"format", "model", "stage", "generation", "adapters", "history"}
_ENTRY_FIELDS = {"version", "previous_version", "fraction"}
# Full-jitter exponential backoff ("Exponential Backoff And Jitter", AWS Architecture Blog,
# 2015): racing promoters spread out instead of colliding again in lockstep.
MAX_ATTEMPTS = 40
BACKOFF_BASE_SECONDS = 0.01
BACKOFF_CAP_SECONDS = 0.5


class RegistryError(LlmfleetError):
    """A registry change that is refused (unknown version, nothing to roll back...)."""

    exit_code = EXIT_REFUSED


class RegistryConflict(RegistryError):
    """Too many concurrent writers: the change was not applied after MAX_ATTEMPTS tries."""


class RegistryRefused(RegistryError):
    """A registry document that fails the checks (`etag`: the refused document's, so a server
    polls past it instead of reading and logging it again). Not retried: the same bytes
    would be refused again."""

    def __init__(self, message: str, etag: str | None):
        super().__init__(message)
        self.etag = etag


@dataclass(frozen=True)
class AdapterEntry:
    version: str
    previous_version: str | None
    fraction: float = 1.0  # share of servers on `version`; the rest stay on previous_version


@dataclass(frozen=True)
class RegistryState:
    model: str
    stage: str
    generation: int
    adapters: dict[str, AdapterEntry]
    history: list[dict]
    etag: str | None

    @classmethod
    def empty(cls, model: str, stage: str) -> RegistryState:
        return cls(model=model, stage=stage, generation=0, adapters={}, history=[], etag=None)

    def to_json(self) -> str:
        return (
            json.dumps(
                {
                    "format": REGISTRY_FORMAT,
                    "model": self.model,
                    "stage": self.stage,
                    "generation": self.generation,
                    "adapters": {
                        name: {"version": e.version, "previous_version": e.previous_version, "fraction": e.fraction}
                        for name, e in sorted(self.adapters.items())
                    },
                    "history": self.history,
                },
                indent=1,
            )
            + "\n"
        )

    @classmethod
    def from_json(cls, text: str | bytes, *, etag: str | None, where: str) -> RegistryState:
        """Parse a registry document, or refuse it whole (RegistryRefused).

        Whole, not entry by entry: the promoter writes only checked names, so one bad entry
        means the document did not come from it and nothing in it can be trusted; dropping
        entries would also make servers retire or swap adapters on a forged document. A
        refused document changes nothing a server serves.
        """
        if len(text) > MAX_REGISTRY_BYTES:
            raise _too_large(where, len(text), etag)
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or set(data) != _DOCUMENT_FIELDS:
                raise ValueError(f"a JSON object with exactly {sorted(_DOCUMENT_FIELDS)} is required")
            if data["format"] != REGISTRY_FORMAT:
                raise ValueError(f"format {data['format']!r:.40} is not {REGISTRY_FORMAT}")
            generation = data["generation"]
            if type(generation) is not int or generation < 0:
                raise ValueError(f"generation {generation!r:.40} must be a non-negative integer")
            if not isinstance(data["model"], str) or not isinstance(data["stage"], str):
                raise ValueError("model and stage must be strings")
            if not isinstance(data["adapters"], dict):
                raise ValueError(f"adapters must be an object of name -> entry, got {data['adapters']!r:.80}")
            history = data["history"]
            if not isinstance(history, list) or not all(isinstance(event, dict) for event in history):
                raise ValueError("history must be a list of objects")
            return cls(
                model=data["model"],
                stage=data["stage"],
                generation=generation,
                adapters={name: _adapter_entry(name, entry) for name, entry in data["adapters"].items()},
                history=history,
                etag=etag,
            )
        except (ValueError, RecursionError) as exc:
            raise RegistryRefused(f"{where}: not a valid registry document: {exc}", etag) from None


def _too_large(where: str, size: int, etag: str | None) -> RegistryRefused:
    return RegistryRefused(f"{where}: {size} bytes; a registry document holds at most {MAX_REGISTRY_BYTES}", etag)


def _adapter_entry(name: str, raw: object) -> AdapterEntry:
    """One adapter's entry, its name and versions checked as publish checks them (ValueError)."""
    check_segment("adapter name", name)
    if not isinstance(raw, dict) or not {"version", "previous_version"} <= set(raw) <= _ENTRY_FIELDS:
        raise ValueError(f"adapter {name!r}: {raw!r:.80} must be an object with {sorted(_ENTRY_FIELDS)}")
    check_segment("version", raw["version"], rule="version")
    if raw["previous_version"] is not None:
        check_segment("previous version", raw["previous_version"], rule="version")
    fraction = raw.get("fraction", 1.0)
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction <= 1:
        raise ValueError(f"adapter {name!r}: fraction {fraction!r:.40} must be a number in (0, 1]")
    return AdapterEntry(version=raw["version"], previous_version=raw["previous_version"], fraction=fraction)


# --- pure transitions ---------------------------------------------------------------------


def _record(state: RegistryState, adapters: dict[str, AdapterEntry], event: dict) -> RegistryState:
    generation = state.generation + 1
    return replace(
        state, generation=generation, adapters=adapters, history=[*state.history, {"generation": generation, **event}]
    )


def promoted(
    state: RegistryState, name: str, version: str, *, fraction: float, actor: str, now: str, action: str = "promote"
) -> RegistryState | None:
    """`state` with `name` moved to `version` for `fraction` of servers; None when nothing changes.

    The version servers fall back to is the last one fully rolled out: promoting over a
    partial (canary) rollout replaces the canary and keeps that fallback.
    """
    if not 0 < fraction <= 1:
        raise RegistryError(f"fraction {fraction} is outside (0, 1]; e.g. 0.1 sends 10% of servers first")
    current = state.adapters.get(name)
    if current is None:
        previous = None
    elif current.version == version:
        if current.fraction == fraction:
            return None
        previous = current.previous_version
    else:
        previous = current.version if current.fraction >= 1 else current.previous_version
    entry = AdapterEntry(version=version, previous_version=previous, fraction=fraction)
    event = {
        "time": now,
        "actor": actor,
        "action": action,
        "name": name,
        "from": current.version if current else None,
        "to": version,
        "fraction": fraction,
        "previous": previous,
    }
    return _record(state, {**state.adapters, name: entry}, event)


def rolled_back(state: RegistryState, name: str, *, actor: str, now: str) -> RegistryState:
    """`name` back on its previous version for every server: a promotion of that version.

    Its own fallback becomes the one it had when it was last made current (from the
    history), so repeated rollbacks walk further back instead of toggling.
    """
    current = state.adapters.get(name)
    if current is None:
        raise RegistryError(f"{state.model}/{state.stage}: adapter {name!r} is not registered; nothing to roll back")
    if current.previous_version is None:
        raise RegistryError(
            f"{state.model}/{state.stage}: adapter {name!r} has no previous version to roll back to "
            f"(serving {current.version}); promote a version explicitly or retire it"
        )
    target = current.previous_version
    made_current = [
        h for h in state.history if h.get("name") == name and h.get("to") == target and h.get("action") != "retire"
    ]
    fallback = made_current[-1].get("previous") if made_current else None
    entry = AdapterEntry(version=target, previous_version=fallback if fallback != target else None, fraction=1.0)
    event = {
        "time": now,
        "actor": actor,
        "action": "rollback",
        "name": name,
        "from": current.version,
        "to": target,
        "fraction": 1.0,
        "previous": entry.previous_version,
    }
    return _record(state, {**state.adapters, name: entry}, event)


def retired(state: RegistryState, name: str, *, actor: str, now: str) -> RegistryState:
    """`state` without `name`: servers unload it."""
    current = state.adapters.get(name)
    if current is None:
        raise RegistryError(
            f"{state.model}/{state.stage}: adapter {name!r} is not registered; registered: {sorted(state.adapters)}"
        )
    adapters = {n: e for n, e in state.adapters.items() if n != name}
    event = {
        "time": now,
        "actor": actor,
        "action": "retire",
        "name": name,
        "from": current.version,
        "to": None,
        "fraction": None,
        "previous": None,
    }
    return _record(state, adapters, event)


def rollout_position(server_id: str, name: str, version: str) -> float:
    """A server's fixed place in [0, 1) for one rollout; it takes the new version when below the fraction."""
    digest = hashlib.sha256(f"{server_id}\0{name}\0{version}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def adapters_for_server(state: RegistryState, server_id: str) -> dict[str, str]:
    """name -> version this server should serve; outside a staged rollout it keeps the previous version."""
    chosen = {}
    for name, entry in state.adapters.items():
        if entry.fraction >= 1 or rollout_position(server_id, name, entry.version) < entry.fraction:
            chosen[name] = entry.version
        elif entry.previous_version is not None:
            chosen[name] = entry.previous_version
    return chosen


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# --- the S3-backed registry ------------------------------------------------------------------


class AdapterRegistry:
    """Registry documents in the store's bucket, changed only by conditional writes."""

    def __init__(
        self, store: ModelStore, *, clock: Callable[[], str] = _utc_now, sleep: Callable[[float], None] = time.sleep
    ):
        self.store = store
        self._clock = clock
        self._sleep = sleep

    def _key(self, model: str, stage: str) -> str:
        check_segment("stage", stage, rule="stage", pattern=STAGE_PATTERN)
        return self.store.registry_key(model, stage)

    def state(self, model: str, stage: str) -> RegistryState:
        """The current state; an empty one (generation 0, no ETag) if the stage has none yet."""
        return self._get(model, stage, None) or RegistryState.empty(model, stage)

    def poll(self, model: str, stage: str, etag: str | None) -> RegistryState | None:
        """A conditional GET: None when the document still has `etag`, else the fresh state."""
        if etag is None:
            return self.state(model, stage)
        return self._get(model, stage, etag)

    def _get(self, model: str, stage: str, etag: str | None) -> RegistryState | None:
        key = self._key(model, stage)
        conditions = {"IfNoneMatch": etag} if etag else {}
        try:
            response = self.store.client.get_object(Bucket=self.store.location.bucket, Key=key, **conditions)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("304", "NotModified"):
                return None
            if is_missing_error(exc):
                return None if etag else RegistryState.empty(model, stage)
            raise StoreError(f"s3://{self.store.location.bucket}/{key}: cannot read the registry: {exc}") from None
        where, etag = f"s3://{self.store.location.bucket}/{key}", response["ETag"]
        if response["ContentLength"] > MAX_REGISTRY_BYTES:
            response["Body"].close()
            raise _too_large(where, response["ContentLength"], etag)
        state = RegistryState.from_json(response["Body"].read(), etag=etag, where=where)
        if (state.model, state.stage) != (model, stage):
            raise RegistryRefused(
                f"{where}: describes model {state.model!r:.80} stage {state.stage!r:.40}, not {model!r} {stage!r}", etag
            )
        return state

    def promote(
        self, model: str, stage: str, name: str, version: str, *, fraction: float = 1.0, actor: str
    ) -> RegistryState:
        """Serve `name`@`version` on `stage` (for `fraction` of servers). The version must be published."""
        check_segment("adapter name", name)
        check_segment("version", version, rule="version")
        if not self.store.adapter_version_exists(model, name, version):
            published = self.store.adapter_versions(model, name)
            raise RegistryError(
                f"adapter {name!r} version {version!r} of model {model!r} is not published (no complete, validated "
                f"version in the store); published: {published or 'none'}"
            )
        return self._change(
            model,
            stage,
            lambda state: promoted(state, name, version, fraction=fraction, actor=actor, now=self._clock()),
        )

    def rollback(self, model: str, stage: str, name: str, *, actor: str) -> RegistryState:
        return self._change(model, stage, lambda state: rolled_back(state, name, actor=actor, now=self._clock()))

    def retire(self, model: str, stage: str, name: str, *, actor: str) -> RegistryState:
        return self._change(model, stage, lambda state: retired(state, name, actor=actor, now=self._clock()))

    def history(self, model: str, stage: str, name: str | None = None) -> list[dict]:
        return [h for h in self.state(model, stage).history if name is None or h.get("name") == name]

    def _change(
        self, model: str, stage: str, transition: Callable[[RegistryState], RegistryState | None]
    ) -> RegistryState:
        key = self._key(model, stage)
        for attempt in range(MAX_ATTEMPTS):
            current = self.state(model, stage)
            changed = transition(current)
            if changed is None:
                return current
            document = changed.to_json().encode()
            if len(document) > MAX_REGISTRY_BYTES:
                raise RegistryError(
                    f"s3://{self.store.location.bucket}/{key}: the change would make the document {len(document)} "
                    f"bytes; servers read at most {MAX_REGISTRY_BYTES}"
                )
            condition = {"IfMatch": current.etag} if current.etag else {"IfNoneMatch": "*"}
            try:
                response = self.store.client.put_object(
                    Bucket=self.store.location.bucket,
                    Key=key,
                    Body=document,
                    ContentType="application/json",
                    **condition,
                )
            except ClientError as exc:
                if is_precondition_failed(exc):
                    self._sleep(random.uniform(0, min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt)))
                    continue
                raise StoreError(f"s3://{self.store.location.bucket}/{key}: cannot write the registry: {exc}") from None
            return replace(changed, etag=response["ETag"])
        raise RegistryConflict(
            f"s3://{self.store.location.bucket}/{key}: another writer changed the registry on each of "
            f"{MAX_ATTEMPTS} attempts; retry later"
        )


__all__ = [
    "AdapterEntry",
    "AdapterRegistry",
    "RegistryConflict",
    "RegistryError",
    "RegistryRefused",
    "RegistryState",
    "adapters_for_server",
    "promoted",
    "retired",
    "rolled_back",
    "rollout_position",
]
