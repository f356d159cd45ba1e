"""`llmfleet lock`: resolve every model's architecture facts (checkpoint directory, the store,
the Hugging Face Hub, bundled configs) and write `fleet.lock.json` beside the manifest.

The edge for the network: HF_TOKEN, HF_ENDPOINT, HF_HUB_OFFLINE and HF_HUB_CACHE are read
here and handed to model_store.facts.hub; AWS credentials and AWS_ENDPOINT_URL reach boto3.
"""

from __future__ import annotations

import os
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console

from llmfleet.model_store.ops.aws_errors import explain
from llmfleet.model_store.facts.families import ConfigError
from llmfleet.model_store.facts.hub import HubClient
from llmfleet.model_store.facts.lock import FactsRecord, FleetLock, lock_path, resolve_fleet
from llmfleet.model_store.contract.manifest import load_fleet, ModelSpec
from llmfleet.model_store.store.store import ModelStore, StoreError
from llmfleet.scripts.cli_common import EXIT_REFUSED, FleetOpt, console, errors, fail, fleet_file

OFFLINE_VALUES = {"1", "true", "yes", "on"}


def hub_from_env(env: dict[str, str] | os._Environ = os.environ) -> HubClient:
    return HubClient(
        endpoint=env.get("HF_ENDPOINT") or None,
        token=env.get("HF_TOKEN") or None,
        cache_dir=env.get("HF_HUB_CACHE") or None,
        offline=env.get("HF_HUB_OFFLINE", "").lower() in OFFLINE_VALUES,
    )


def store_facts(spec: ModelSpec, notes: list[str]) -> FactsRecord | None:
    """The model's own revision in the store, or None (noted) when it is not there or unreachable."""
    store = ModelStore.from_uri(spec.store_uri)
    try:
        config = store.read_model_config(spec.name, spec.revision)
        weights = store.read_model_weights(spec.name, spec.revision)
    except (StoreError, ClientError, BotoCoreError) as exc:
        notes.append(f"model {spec.name!r}: store not used ({str(explain(exc)).splitlines()[0]})")
        return None
    return FactsRecord(
        origin="store",
        location=f"{spec.store_uri}/models/{spec.name}",
        revision=spec.revision,
        config=config,
        weights_bytes_by_dtype=weights,
    )


def resolve_and_write(fleet_path: Path, *, report: Console = console) -> FleetLock:
    """Resolve FLEET's facts and write its lock; CLI exits for every failure. What was
    resolved is printed to `report` (stderr when stdout carries JSON)."""
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()  # one line per model is the progress here
    fleet = load_fleet(fleet_path)
    notes: list[str] = []
    store = lambda spec: store_facts(spec, notes)  # noqa: E731
    with report.status("resolving architecture facts") as status:
        try:
            lock, fallbacks = resolve_fleet(
                fleet, fleet_path.parent, hub=hub_from_env(), store=store, progress=lambda name: status.update(f"resolving {name}")
            )
        except ConfigError as exc:
            raise fail(f"{fleet_path}: cannot lock:\n{exc}", EXIT_REFUSED) from None
    target = lock_path(fleet_path)
    partial = target.with_suffix(".json.partial")
    partial.write_text(lock.to_text())
    partial.replace(target)  # the old lock stays whole until the new one is
    for note in notes + fallbacks:
        errors.print(f"note: {note}", highlight=False, soft_wrap=True)
    for name, entry in lock.models.items():
        where = f"{entry.model.origin}:{entry.model.location}" + (f"@{entry.model.revision}" if entry.model.revision else "")
        report.print(f"  {name}: {where}", highlight=False, soft_wrap=True)
    report.print(f"wrote {target}", highlight=False, soft_wrap=True)
    return lock


def lock(fleet: FleetOpt = None) -> None:
    """Resolve every model's architecture facts and write fleet.lock.json beside the manifest.

    Per model, in order: its local checkpoint directory; its revision in the store
    (config.json and safetensors headers); the Hugging Face Hub for `architecture:
    org/name[@revision]` (HF_TOKEN, HF_ENDPOINT, HF_HUB_CACHE); the bundled configs when the
    Hub cannot be asked (HF_HUB_OFFLINE=1 or no network) and no @revision is pinned. Commit
    the lock: plan, synth and the containers read it and never the network.
    """
    resolve_and_write(fleet_file(fleet))
