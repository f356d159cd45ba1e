"""`fleet.lock.json`: every model's architecture facts, resolved once and committed.

`llmfleet lock -f FLEET` asks, for each model and in this order: its local checkpoint
directory; its own revision in the store (config.json and safetensors headers); the
Hugging Face Hub for `architecture: org/name[@revision]`; the bundled known configs, only
when the Hub cannot be asked. It records what it read, where, and at which commit.
Planning, `cdk synth`, the stacks and the container read the lock and never the network;
a lock that no longer matches the manifest is refused with the command that refreshes it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, ValidationError, model_serializer

from llmfleet.model_store.facts import architectures
from llmfleet.model_store.facts.families import ArchitectureFacts, ConfigError, facts_from_config
from llmfleet.model_store.facts.hub import HubClient, HubUnreachable
from llmfleet.model_store.contract.manifest import FleetManifest, ManifestError, ModelSpec
from llmfleet.model_store.facts.pipelines import facts_from_record, PipelineFacts, read_known_pipeline, read_pipeline
from llmfleet.model_store.contract.kinds import IMAGE, kind

LOCK_FORMAT = 1
Origin = Literal["local", "store", "hub", "bundled"]


class LockError(ManifestError):
    """A lock that cannot be used as it is; the message says which command fixes it."""


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FactsRecord(Frozen):
    """What one resolution read: enough to plan without asking again."""

    origin: Origin
    location: str = Field(description="Checkpoint path, s3:// revision prefix, Hub repo id, or bundled id.")
    revision: str | None = Field(description="Hub commit sha or store revision the facts were read at.")
    config: dict[str, Any] = Field(description="config.json as read (the planner reads its keys); model_index.json for an image pipeline.")
    weights_bytes_by_dtype: dict[str, NonNegativeInt] | None = Field(
        default=None, description="Safetensors tensor bytes per dtype, from the files' headers."
    )
    components: dict[str, dict[str, Any]] | None = Field(
        default=None, description="An image pipeline's components: {name: {config, weights (bytes per dtype)}}."
    )

    @model_serializer(mode="wrap")
    def _without_empty_components(self, handler) -> dict[str, Any]:
        """A text model's record is written as before image pipelines existed: no `components` key."""
        data = handler(self)
        if data.get("components") is None:
            data.pop("components", None)
        return data

    def facts(self) -> ArchitectureFacts | PipelineFacts:
        if self.components is not None:
            return facts_from_record(self.config, self.components, source=f"{self.origin}:{self.location}")
        total = sum(self.weights_bytes_by_dtype.values()) if self.weights_bytes_by_dtype else None
        where = f"{self.origin}:{self.location}" + (f"@{self.revision}" if self.revision else "")
        return facts_from_config(self.config, total_size=total, source=where)


class ModelLock(Frozen):
    inputs: dict[str, str | None] = Field(description="The manifest fields the facts were resolved from.")
    model: FactsRecord
    draft: FactsRecord | None = None


class FleetLock(Frozen):
    format: Literal[1] = Field(default=LOCK_FORMAT, description="This layout's version; another is refused.")
    fleet: str
    models: dict[str, ModelLock]

    def to_text(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


def lock_path(manifest_path: str | Path) -> Path:
    """`fleet.yaml` -> `fleet.lock.json` beside it (each manifest of a folder its own lock)."""
    manifest_path = Path(manifest_path)
    return manifest_path.with_name(f"{manifest_path.stem}.lock.json")


def draft_id(spec: ModelSpec) -> str | None:
    """The speculative draft model whose weights the server loads (their memory counts)."""
    if spec.speculative and spec.speculative.method == "draft_model":
        return spec.speculative.model
    return None


def _local_fingerprint(spec: ModelSpec, manifest_dir: Path) -> str | None:
    config = manifest_dir / spec.source / kind(spec.kind).facts_file
    return hashlib.sha256(config.read_bytes()).hexdigest()[:16] if config.is_file() else None


def lock_inputs(spec: ModelSpec, manifest_dir: Path) -> dict[str, str | None]:
    """What a model's facts depend on; any change makes its lock entry stale."""
    return {
        "source": spec.source,
        "revision": spec.revision,
        "architecture": spec.architecture,
        "draft": draft_id(spec),
        "local_config_sha256": _local_fingerprint(spec, manifest_dir) if spec.is_local_source else None,
    }


# --- resolution ---------------------------------------------------------------------------

StoreReader = Callable[[ModelSpec], FactsRecord | None]


def _bundled(hf_id: str) -> FactsRecord:
    config = architectures.known_config(hf_id)
    return FactsRecord(origin="bundled", location=hf_id, revision=None, config={k: v for k, v in config.items() if not k.startswith("_")})


def _from_hub(hf_id: str, revision: str | None, hub: HubClient, notes: list[str]) -> FactsRecord:
    try:
        checkpoint = hub.checkpoint(hf_id, revision)
    except HubUnreachable as exc:
        if revision is None and hf_id in architectures.known_architecture_ids():
            notes.append(f"{exc}; used the bundled copy of {hf_id}'s config.json")
            return _bundled(hf_id)
        raise
    return FactsRecord(
        origin="hub",
        location=hf_id,
        revision=checkpoint.commit,
        config=checkpoint.config,
        weights_bytes_by_dtype=checkpoint.weights,
    )


def resolve_model(
    spec: ModelSpec, manifest_dir: Path, *, hub: HubClient, store: StoreReader | None, notes: list[str]
) -> ModelLock:
    """Resolve one model's facts (and its draft model's); raise ConfigError with one line."""
    if kind(spec.kind) is IMAGE:
        return _resolve_pipeline(spec, manifest_dir, notes)
    record = None
    if spec.is_local_source:
        config, weights = architectures.read_checkpoint(manifest_dir / spec.source)
        record = FactsRecord(origin="local", location=spec.source, revision=None, config=config, weights_bytes_by_dtype=weights)
    elif store is not None:
        record = store(spec)
    if record is None:
        if spec.architecture is None:
            store_said = (
                f"the store holds no {spec.source}/{spec.revision}/config.json"
                if store is not None
                else "the store is read only by `llmfleet lock`"
            )
            raise ConfigError(f"model {spec.name!r}: no facts: {store_said} and 'architecture' (a Hugging Face id) is not set")
        record = _from_hub(spec.hub_id, spec.hub_revision, hub, notes)
    draft = draft_id(spec)
    draft_record = _from_hub(draft, None, hub, notes) if draft else None
    record.facts()  # refuse now, naming the key, what the planner could not read later
    return ModelLock(inputs=lock_inputs(spec, manifest_dir), model=record, draft=draft_record)


def _resolve_pipeline(spec: ModelSpec, manifest_dir: Path, notes: list[str]) -> ModelLock:
    """An image model's pipeline facts: its local checkpoint, else the bundled copy of `architecture`
    (pipelines are not read from the Hub or the store: their many files are resolved once, offline)."""
    if spec.is_local_source:
        (model_index, components), origin, location = read_pipeline(manifest_dir / spec.source), "local", spec.source
    elif spec.architecture is not None:
        (model_index, components), origin, location = read_known_pipeline(spec.hub_id), "bundled", spec.hub_id
        notes.append(f"model {spec.name!r}: pipeline facts from the bundled copy of {spec.hub_id}")
    else:
        raise ConfigError(f"model {spec.name!r}: an image model needs a local pipeline folder or 'architecture' (a bundled pipeline id)")
    record = FactsRecord(origin=origin, location=location, revision=None, config=model_index, components=components)
    record.facts()  # refuse now, naming the key, what the planner could not read later
    return ModelLock(inputs=lock_inputs(spec, manifest_dir), model=record)


def resolve_fleet(
    fleet: FleetManifest,
    manifest_dir: Path,
    *,
    hub: HubClient,
    store: StoreReader | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> tuple[FleetLock, list[str]]:
    """Resolve every model; returns the lock and notes (fallbacks taken). One ConfigError
    lists every model that could not be resolved."""
    models, failures, notes = {}, [], []
    for spec in fleet.models:
        progress(spec.name)
        try:
            models[spec.name] = resolve_model(spec, manifest_dir, hub=hub, store=store, notes=notes)
        except ConfigError as exc:
            failures.append(str(exc))
    if failures:
        raise ConfigError("\n".join(failures))
    return FleetLock(fleet=fleet.name, models=models), notes


# --- reading ------------------------------------------------------------------------------


def read_lock(manifest_path: Path) -> FleetLock | None:
    """The manifest's lock, or None when there is none; a damaged lock is a LockError."""
    path = lock_path(manifest_path)
    if not path.is_file():
        return None
    try:
        return FleetLock.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise LockError(f"{path}: not a usable lock ({where}: {error['msg']}); rerun `llmfleet lock -f {manifest_path}`") from None


def check_lock(fleet: FleetManifest, lock: FleetLock, manifest_path: Path) -> None:
    """Refuse a lock that was not resolved from this manifest, naming what changed."""
    refresh = f"run `llmfleet lock -f {manifest_path}` (or `llmfleet plan -f {manifest_path} --refresh`)"
    stale = []
    for spec in fleet.models:
        entry = lock.models.get(spec.name)
        if entry is None:
            stale.append(f"model {spec.name!r} is not in it")
            continue
        now = lock_inputs(spec, manifest_path.parent)
        changed = [f"{key} {entry.inputs.get(key)!r} -> {value!r}" for key, value in now.items() if entry.inputs.get(key) != value]
        if changed:
            stale.append(f"model {spec.name!r} changed: {', '.join(changed)}")
    extra = sorted(set(lock.models) - {m.name for m in fleet.models})
    if extra:
        stale.append(f"it has models the manifest no longer has: {extra}")
    if stale:
        raise LockError(f"{lock_path(manifest_path)} is stale: {'; '.join(stale)}; {refresh}")


def offline_lock(fleet: FleetManifest, manifest_dir: Path) -> FleetLock:
    """Without a lock file: what the offline sources (checkpoint directories, bundled configs) say."""
    offline = HubClient(offline=True)
    try:
        return resolve_fleet(fleet, manifest_dir, hub=offline)[0]
    except ConfigError as exc:
        raise LockError(f"{exc}\nno lock beside the manifest: run `llmfleet lock` to resolve these from the store or the Hub") from None
