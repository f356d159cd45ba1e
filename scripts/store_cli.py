"""`llmfleet model ...` and `llmfleet adapter ...`: the store and registry for people and CI.

Thin over model_store.store / adapters / registry. Exit codes: 0 done, 1 refused (rejected
adapter, existing or missing version, lost race), 2 bad input (flags, store URI, fleet, AWS
credentials). The store comes from `--store`, else LLMFLEET_STORE, else the fleet manifest
(the model's store); the stage from `--stage`, else the manifest's. boto3 reads
AWS_ENDPOINT_URL itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from botocore.exceptions import BotoCoreError, ClientError
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from model_store.container_contract import STORE_ENV
from model_store.adapters import accepted_bases_for, check_segment, max_rank_for
from model_store.aws_errors import explain
from model_store.errors import LlmfleetError
from model_store.registry import AdapterRegistry, RegistryState
from model_store.store import ModelStore, ProgressCallback, StoreLocation, VersionManifest, base_revision
from scripts.cli_common import EXIT_BAD_INPUT, FleetOpt, JsonOpt, console, errors, fail, flag_values, fleet_models, from_fleet, optional_fleet

model_app = typer.Typer(help="Base models in the S3 store.", no_args_is_help=True)
adapter_app = typer.Typer(help="Publish, promote, roll back and inspect LoRA adapters.", no_args_is_help=True)

StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store", envvar=STORE_ENV, show_envvar=True, help="s3://bucket/prefix of the store (default: the fleet manifest's)."
    ),
]
ModelOpt = Annotated[str, typer.Option("--model", "-m", autocompletion=fleet_models, help="The model's name in the fleet.")]
StageOpt = Annotated[
    str | None,
    typer.Option("--stage", "-s", help="The registry stage, e.g. prod, staging (default: the fleet manifest's)."),
]
ActorOpt = Annotated[
    str | None, typer.Option("--actor", help="Who is acting, for the history (default: $GITHUB_ACTOR, else $USER).")
]
DirArg = Annotated[Path, typer.Argument(exists=True, file_okay=False, dir_okay=True, help="The directory to upload.")]


def _actor(actor: str | None) -> str:
    return actor or os.environ.get("GITHUB_ACTOR") or os.environ.get("USER") or "unknown"


def _open_store(uri: str | None, fleet: Path | None, model: str) -> ModelStore:
    how = f"pass --store s3://bucket/prefix or set {STORE_ENV}"
    uri = from_fleet(uri or None, fleet, "store", lambda manifest: manifest.store_for(model), how)
    with flag_values():
        StoreLocation.parse(uri)
    return ModelStore.from_uri(uri)


def _registry(store: str | None, fleet: Path | None, model: str, stage: str | None) -> tuple[AdapterRegistry, str]:
    """MODEL's registry and the stage to act on (the flags, else the fleet manifest)."""
    stage = from_fleet(stage, fleet, "stage", lambda manifest: manifest.stage, "pass --stage")
    return AdapterRegistry(_open_store(store, fleet, model)), stage


def _check_input(kind: str, value: str, pattern: str | None = None) -> str:
    with flag_values():
        return check_segment(kind, value, **({"pattern": pattern} if pattern else {}))


@contextlib.contextmanager
def _refusals(as_json: bool) -> Iterator[None]:
    """With --json, also a JSON error object on stdout for the store's refusals and AWS
    failures (the app's root group prints the message and exits with the error's code)."""
    try:
        yield
    except (LlmfleetError, BotoCoreError, ClientError) as exc:
        if as_json:
            error = explain(exc)
            print(json.dumps({"error": str(error), "rule": getattr(error, "rule", None), "kind": type(error).__name__}))
        raise


@contextlib.contextmanager
def _progress_bar(description: str) -> Iterator[ProgressCallback]:
    """A rich progress bar on stderr, fed by the store's (bytes, total) callback from transfer threads.

    It appears with the first transferred byte, so a refusal before any upload shows none;
    until then a spinner (which leaves nothing behind) covers the checks and the hashing of
    the first files, seconds for multi-GiB shards.
    """
    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=errors,
    )
    task = bar.add_task(description, total=None)
    preparing = errors.status(f"{description}: checking the store, hashing the files")
    started = threading.Event()
    lock = threading.Lock()

    def advance(done: int, total: int) -> None:
        if not started.is_set():
            with lock:
                if not started.is_set():
                    preparing.stop()  # rich shows one live display at a time
                    bar.start()
                    started.set()
        bar.update(task, total=total, advance=done)

    preparing.start()
    try:
        yield advance
    finally:
        preparing.stop()
        if started.is_set():
            bar.stop()


def _emit(as_json: bool, data: Any, text: str) -> None:
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        console.print(text, highlight=False, markup=False)


def _version_summary(store: ModelStore, manifest: VersionManifest, prefix: str) -> dict:
    return {
        "model": manifest.model,
        "adapter": manifest.adapter,
        "version": manifest.version,
        "files": len(manifest.files),
        "bytes": manifest.total_bytes,
        "uri": f"s3://{store.location.bucket}/{prefix}",
        "uploader": manifest.uploader,
        "created": manifest.created,
    }


# --- llmfleet model ----------------------------------------------------------------------------


@model_app.command("upload")
def model_upload(
    directory: DirArg,
    model: ModelOpt,
    revision: Annotated[
        str, typer.Option("--revision", "-r", help="Revision name (immutable once uploaded).")
    ] = "main",
    source: Annotated[
        str | None,
        typer.Option("--source", help="Where the weights came from (e.g. a Hugging Face id); adapters may name it."),
    ] = None,
    store: StoreOpt = None,
    fleet: FleetOpt = None,
    actor: ActorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload a checkpoint directory (config.json, tokenizer, weights) as MODEL@REVISION; resumable."""
    model_store = _open_store(store, fleet, model)
    with _refusals(as_json), _progress_bar(f"{model}@{revision}") as progress:
        manifest = model_store.upload_model(
            directory, model, revision, progress=progress, uploader=_actor(actor), source=source
        )
    summary = _version_summary(model_store, manifest, model_store.model_prefix(model, revision))
    _emit(
        as_json,
        summary,
        f"uploaded {model}@{revision}: {summary['files']} files, {summary['bytes']:,} bytes -> {summary['uri']}",
    )


# --- llmfleet adapter --------------------------------------------------------------------------


@adapter_app.command("publish")
def adapter_publish(
    directory: DirArg,
    model: ModelOpt,
    name: Annotated[str, typer.Option("--name", "-n", help="The adapter's name (what clients pass as `model`).")],
    version: Annotated[
        str | None, typer.Option("--version", help="Version name; default: derived from the content (reruns resume).")
    ] = None,
    model_revision: Annotated[
        str | None,
        typer.Option(
            "--model-revision",
            help="Base model revision in the store (default: the fleet's, else the store's only complete revision).",
        ),
    ] = None,
    store: StoreOpt = None,
    fleet: FleetOpt = None,
    actor: ActorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate a peft LoRA directory against the base model, then upload it as a new immutable version.

    The fleet manifest, when there is one, sets the rank ceiling (lora.max_rank), the base
    revision and the names the adapter's base model may carry. Prints the version (with
    --json: an object with a `version` key).
    """
    manifest_of_fleet = optional_fleet(fleet)
    model_store = _open_store(store, fleet, model)
    listed = next((m for m in manifest_of_fleet.models if m.name == model), None) if manifest_of_fleet else None
    with _refusals(as_json):
        stored = [] if model_revision or listed else model_store.model_revisions(model)
        revision = base_revision(model, given=model_revision, fleet_revision=listed.revision if listed else None, stored=stored)
        max_rank = max_rank_for(manifest_of_fleet, model)
        with _progress_bar(f"{name} for {model}") as progress:
            manifest = model_store.publish_adapter(
                directory,
                model,
                name,
                version=version,
                progress=progress,
                model_revision=revision,
                max_rank=max_rank,
                accepted_bases=accepted_bases_for(manifest_of_fleet, model),
                uploader=_actor(actor),
            )
    summary = _version_summary(model_store, manifest, model_store.adapter_prefix(model, name, manifest.version))
    adapter = manifest.details["adapter"]
    summary |= {"rank": adapter["rank"], "base_model": adapter["base_model"], "left_out": adapter["left_out"]}
    if adapter["left_out"]:
        errors.print(f"left out (trainer leftovers, never served): {', '.join(adapter['left_out'])}", markup=False)
    _emit(as_json, summary, manifest.version)


def _entry_summary(state: RegistryState, name: str) -> dict:
    entry = state.adapters.get(name)
    return {
        "model": state.model,
        "stage": state.stage,
        "generation": state.generation,
        "name": name,
        "version": entry.version if entry else None,
        "previous_version": entry.previous_version if entry else None,
        "fraction": entry.fraction if entry else None,
    }


def _describe_entry(summary: dict) -> str:
    if summary["version"] is None:
        return f"{summary['model']}/{summary['stage']}: {summary['name']} retired (generation {summary['generation']})"
    staged = f" on {summary['fraction']:.0%} of servers" if summary["fraction"] < 1 else ""
    fallback = f", previous {summary['previous_version']}" if summary["previous_version"] else ""
    return (
        f"{summary['model']}/{summary['stage']}: {summary['name']} -> {summary['version']}{staged}{fallback} "
        f"(generation {summary['generation']})"
    )


def _change_registry(as_json: bool, name: str, change: Callable[[], RegistryState]) -> None:
    """Apply one registry change and print the adapter's entry after it (the common tail of
    promote, rollback and retire)."""
    with _refusals(as_json):
        state = change()
    summary = _entry_summary(state, name)
    _emit(as_json, summary, _describe_entry(summary))


@adapter_app.command("promote")
def adapter_promote(
    ref: Annotated[str, typer.Argument(metavar="NAME@VERSION", help="The adapter and the published version to serve.")],
    model: ModelOpt,
    stage: StageOpt = None,
    fraction: Annotated[
        float, typer.Option("--fraction", min=0.0, max=1.0, help="Staged rollout: share of servers that take it first.")
    ] = 1.0,
    store: StoreOpt = None,
    fleet: FleetOpt = None,
    actor: ActorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make STAGE serve NAME@VERSION (a conditional write; concurrent promoters never lose an update)."""
    name, at, version = ref.partition("@")
    if not at or not name or not version:
        raise fail(f"{ref!r} is not NAME@VERSION (see `llmfleet adapter versions NAME --model M`)", EXIT_BAD_INPUT)
    _check_input("adapter name", name)
    _check_input("version", version)
    registry, stage = _registry(store, fleet, model, stage)
    _change_registry(
        as_json, name, lambda: registry.promote(model, stage, name, version, fraction=fraction, actor=_actor(actor))
    )


@adapter_app.command("rollback")
def adapter_rollback(
    name: Annotated[str, typer.Argument(help="The adapter to put back on its previous version.")],
    model: ModelOpt,
    stage: StageOpt = None,
    store: StoreOpt = None,
    fleet: FleetOpt = None,
    actor: ActorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Serve NAME's previous version again on every server of STAGE."""
    _check_input("adapter name", name)
    registry, stage = _registry(store, fleet, model, stage)
    _change_registry(as_json, name, lambda: registry.rollback(model, stage, name, actor=_actor(actor)))


@adapter_app.command("retire")
def adapter_retire(
    name: Annotated[str, typer.Argument(help="The adapter STAGE stops serving.")],
    model: ModelOpt,
    stage: StageOpt = None,
    store: StoreOpt = None,
    fleet: FleetOpt = None,
    actor: ActorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove NAME from STAGE; servers unload it. Its published versions stay in the store."""
    _check_input("adapter name", name)
    registry, stage = _registry(store, fleet, model, stage)
    _change_registry(as_json, name, lambda: registry.retire(model, stage, name, actor=_actor(actor)))


@adapter_app.command("history")
def adapter_history(
    name: Annotated[str, typer.Argument(help="The adapter whose changes to show.")],
    model: ModelOpt,
    stage: StageOpt = None,
    store: StoreOpt = None,
    fleet: FleetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every change to NAME on STAGE, oldest first: who, when, what, from which version to which."""
    _check_input("adapter name", name)
    registry, stage = _registry(store, fleet, model, stage)
    with _refusals(as_json):
        history = registry.history(model, stage, name)
    if as_json:
        print(json.dumps(history, indent=2))
        return
    table = Table(title=f"{name} on {model}/{stage}")
    for column in ("gen", "time", "actor", "action", "from", "to", "fraction"):
        table.add_column(column, overflow="fold")
    for event in history:
        fraction = event.get("fraction")
        table.add_row(
            str(event["generation"]),
            event["time"],
            escape(event["actor"]),  # e.g. "dependabot[bot]"
            event["action"],
            event.get("from") or "-",
            event.get("to") or "-",
            "-" if fraction is None else f"{fraction:.0%}",
        )
    console.print(table)


@adapter_app.command("list")
def adapter_list(
    model: ModelOpt, stage: StageOpt = None, store: StoreOpt = None, fleet: FleetOpt = None, as_json: JsonOpt = False
) -> None:
    """The adapters STAGE serves, with versions, staged fractions and fallbacks."""
    registry, stage = _registry(store, fleet, model, stage)
    with _refusals(as_json):
        state = registry.state(model, stage)
    if as_json:
        adapters = {
            name: {"version": e.version, "previous_version": e.previous_version, "fraction": e.fraction}
            for name, e in sorted(state.adapters.items())
        }
        print(
            json.dumps({"model": model, "stage": stage, "generation": state.generation, "adapters": adapters}, indent=2)
        )
        return
    table = Table(title=f"{model}/{stage} (generation {state.generation})")
    for column in ("adapter", "version", "servers", "previous"):
        table.add_column(column)
    for name, entry in sorted(state.adapters.items()):
        table.add_row(name, entry.version, f"{entry.fraction:.0%}", entry.previous_version or "-")
    console.print(table)


@adapter_app.command("versions")
def adapter_versions(
    name: Annotated[str, typer.Argument(help="The adapter.")],
    model: ModelOpt,
    store: StoreOpt = None,
    fleet: FleetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Published (complete, validated) versions of NAME, oldest first."""
    _check_input("adapter name", name)
    model_store = _open_store(store, fleet, model)
    with _refusals(as_json):
        versions = model_store.adapter_versions(model, name)
    _emit(
        as_json,
        {"model": model, "name": name, "versions": versions},
        "\n".join(versions) or f"no published versions of {name}",
    )
