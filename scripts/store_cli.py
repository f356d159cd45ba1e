"""`llmfleet model ...` and `llmfleet adapter ...`: the store and registry for people and CI.

Thin over model_store.store.store / hub_import / adapters / registry. Exit codes: 0 done, 1 refused
(rejected adapter, existing or missing version, lost race), 2 bad input (flags, store URI, fleet,
AWS credentials). The store comes from `--store`, else LLMFLEET_STORE, else the fleet manifest
(the model's store); the stage from `--stage`, else the manifest's. boto3 reads
AWS_ENDPOINT_URL itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from llmfleet.model_store.contract.container import STORE_ENV
from llmfleet.model_store.store.adapters import accepted_bases_for, check_segment, max_rank_for, validate_adapter
from llmfleet.model_store.ops.aws_errors import explain
from llmfleet.model_store.errors import LlmfleetError
from llmfleet.model_store.planning.fleet import adapter_base_from_lock
from llmfleet.model_store.store.hub_import import HubRef, import_model, parse_hub_ref
from llmfleet.model_store.contract.manifest import FleetManifest, load_fleet
from llmfleet.model_store.store.registry import AdapterRegistry, RegistryState
from llmfleet.model_store.store.store import base_revision, ModelStore, ProgressCallback, StoreLocation, VersionManifest
from llmfleet.scripts.cli_common import (
    EXIT_BAD_INPUT, EXIT_REFUSED, FleetOpt, JsonOpt, console, errors, fail, fleet_file, fleet_models, flag_values,
    from_fleet, optional_fleet,
)  # fmt: skip
from llmfleet.scripts.lock_cli import hub_from_env, resolve_and_write

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


@model_app.command("import")
def model_import(
    ref: Annotated[
        str, typer.Argument(metavar="ORG/NAME[@REVISION]", help="The Hugging Face model and its branch, tag or commit.")
    ],
    model: ModelOpt,
    revision: Annotated[
        str | None,
        typer.Option("--revision", "-r", help="Revision name in the store (default: the Hub commit sha it resolved to)."),
    ] = None,
    store: StoreOpt = None,
    fleet: FleetOpt = None,
    actor: ActorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stream a Hub checkpoint into the store as MODEL@REVISION, never whole on local disk; resumable.

    HF_TOKEN (gated and private repos) and HF_ENDPOINT (another Hub) are honoured. Rerun
    after an interruption: stored files and parts are not sent again. Other weight formats
    beside safetensors (*.bin, *.pth...) are left out. With a fleet manifest named (--fleet/-f
    or LLMFLEET_FLEET), its lock is rewritten afterwards; its model must name this revision.
    """
    hub_ref = _check_hub_ref(ref)
    if revision is not None:
        _check_input("revision", revision)
    model_store = _open_store(store, fleet, model)
    with _refusals(as_json), _progress_bar(f"{hub_ref.repo_id} -> {model}") as progress:
        manifest = import_model(
            model_store, hub_from_env(), hub_ref, model, revision, progress=progress, uploader=_actor(actor)
        )
    summary = _version_summary(model_store, manifest, model_store.model_prefix(model, manifest.version))
    summary |= {"hub": manifest.details["hub"]}
    _emit(
        as_json,
        summary,
        f"imported {hub_ref.repo_id}@{summary['hub']['commit'][:12]} as {model}@{manifest.version}: "
        f"{summary['files']} files, {summary['bytes']:,} bytes -> {summary['uri']}",
    )
    if fleet is not None:
        _refresh_lock(fleet, model, manifest.version, report=errors if as_json else console)


def _check_hub_ref(ref: str) -> HubRef:
    with flag_values():
        return parse_hub_ref(ref)


def _refresh_lock(fleet_path: Path, model: str, revision: str, *, report: Console) -> None:
    """Rewrite FLEET's lock so it records the imported revision; refused (before writing)
    when the fleet does not serve that revision of the model."""
    spec = next((m for m in load_fleet(fleet_path).models if m.name == model), None)
    if spec is None or spec.is_local_source or spec.revision != revision:
        found = "no such model" if spec is None else f"source {spec.source}, revision {spec.revision}"
        raise fail(
            f"{fleet_path}: lock not refreshed: model {model!r} ({found}) does not serve the imported revision; "
            f"set its source to the store and `revision: {revision}`, then run `llmfleet lock -f {fleet_path}`",
            EXIT_REFUSED,
        )
    resolve_and_write(fleet_path, report=report)


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
    model_store = _open_store(store, fleet, model)
    with _refusals(as_json):
        checks = _adapter_checks(model_store, optional_fleet(fleet), model, model_revision)
        with _progress_bar(f"{name} for {model}") as progress:
            manifest = model_store.publish_adapter(
                directory, model, name, version=version, progress=progress, uploader=_actor(actor), **checks
            )
    summary = _version_summary(model_store, manifest, model_store.adapter_prefix(model, name, manifest.version))
    adapter = manifest.details["adapter"]
    summary |= {"rank": adapter["rank"], "base_model": adapter["base_model"], "left_out": adapter["left_out"]}
    if adapter["left_out"]:
        errors.print(f"left out (trainer leftovers, never served): {', '.join(adapter['left_out'])}", markup=False)
    _emit(as_json, summary, manifest.version)


def _adapter_checks(
    model_store: ModelStore, fleet: FleetManifest | None, model: str, model_revision: str | None
) -> dict[str, Any]:
    """What an adapter of `model` is checked against, as publish and validate take it: the base
    revision (given, the fleet's, else the store's only one), rank ceiling and accepted bases."""
    listed = next((m for m in fleet.models if m.name == model), None) if fleet else None
    stored = [] if model_revision or listed else model_store.model_revisions(model)
    revision = base_revision(model, given=model_revision, fleet_revision=listed.revision if listed else None, stored=stored)
    return {
        "model_revision": revision,
        "max_rank": max_rank_for(fleet, model),
        "accepted_bases": accepted_bases_for(fleet, model),
    }


@adapter_app.command("validate")
def adapter_validate(
    directory: Annotated[
        Path, typer.Argument(exists=True, file_okay=False, dir_okay=True, help="The peft LoRA directory to check.")
    ],
    model: ModelOpt,
    model_revision: Annotated[
        str | None,
        typer.Option("--model-revision", help="With a store: the base revision there (default: as publish chooses it)."),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            "--store", envvar=STORE_ENV, show_envvar=True,
            help="s3://bucket/prefix: check against the stored base model (never the manifest's store: offline).",
        ),
    ] = None,
    fleet: FleetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run publish's checks on an adapter without uploading it (a pull request's check): exit 0
    when publish would accept it, 1 with the rule it breaks.

    With a store (--store or LLMFLEET_STORE): against the stored base model, exactly as
    `adapter publish`. Without one: against the architecture in the fleet manifest's lock, no
    network.
    """
    with _refusals(as_json):
        if store:
            model_store = _open_store(store, fleet, model)
            checks = _adapter_checks(model_store, optional_fleet(fleet), model, model_revision)
            info = model_store.check_adapter(directory, model, **checks)
        else:
            manifest_of_fleet, arch = adapter_base_from_lock(fleet_file(fleet), model)
            listed = next(m for m in manifest_of_fleet.models if m.name == model)
            info = validate_adapter(
                directory,
                model_name=model,
                accepted_bases=accepted_bases_for(manifest_of_fleet, model, listed.hub_id),
                max_rank=max_rank_for(manifest_of_fleet, model),
                arch=arch,
            )
    left_out = f"; left out (trainer leftovers): {', '.join(info.left_out)}" if info.left_out else ""
    _emit(
        as_json,
        {"valid": True, **asdict(info)},
        f"valid: {directory} for {model}: rank {info.rank}, targets {', '.join(info.target_modules)}, "
        f"{info.tensor_count} tensors in {len(info.files)} files{left_out}",
    )


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
