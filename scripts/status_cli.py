"""`llmfleet status`: the local fleet's server, or the AWS account's deployments, as one table.

Thin: observations are gathered here (HTTP for the local fleet) or by model_store.ops.aws_status,
and model_store.ops.status computes the rows.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Annotated

import boto3
import httpx2
import typer
from botocore.exceptions import BotoCoreError, ClientError
from rich.markup import escape
from rich.table import Table

from llmfleet.model_store.ops.aws_errors import AwsError
from llmfleet.model_store.ops.aws_status import aws_status_rows
from llmfleet.model_store.ops.boot_log import BootRecord, describe_boot
from llmfleet.model_store.store.registry import AdapterRegistry, adapters_for_server, RegistryState
from llmfleet.model_store.ops.status import (
    Deployment,
    fleet_cost_per_hour,
    Metrics,
    metrics_from_prometheus,
    model_status,
    ModelStatus,
    promoted_versions,
    ServerAdapters,
)
from llmfleet.model_store.store.store import ModelStore, StoreLocation
from llmfleet.scripts import local_fleet
from llmfleet.scripts.cli_common import FleetOpt, JsonOpt, console, errors, fleet_file, load_and_plan
from llmfleet.scripts.local_fleet import STANDIN_LABEL
from llmfleet.model_store.ops.status import LOCAL


def local_status_rows(state: local_fleet.LocalState) -> list[ModelStatus]:
    """The local fleet's one server: its own /llmfleet/adapters and /metrics, the registry in moto."""
    from prometheus_client.parser import text_string_to_metric_families

    server = state.processes.get("server")
    serving = server is not None and server.alive() and local_fleet.http_ok(f"{state.server_url}/health")
    servers, metrics = [], Metrics()
    if serving:
        try:
            described = httpx2.get(f"{state.server_url}/llmfleet/adapters", timeout=5).json()
            boot = BootRecord.model_validate(described["boot"]) if described.get("boot") else None
            servers.append(ServerAdapters(described["server_id"], described["adapters"], boot=boot and describe_boot(boot)))
            text = httpx2.get(f"{state.server_url}/metrics", timeout=5).text
            metrics = metrics_from_prometheus(
                (s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples
            )
            if boot is not None:
                metrics = replace(metrics, last_boot_seconds=boot.phases["total"])
        except (httpx2.HTTPError, KeyError, ValueError) as exc:  # ValidationError is a ValueError
            servers.append(ServerAdapters(local_fleet.LOCAL_SERVER_ID, error=str(exc)))
    store = ModelStore(
        StoreLocation.parse(state.store_uri), local_fleet.local_client("s3", state.s3_endpoint, state.region)
    )
    moto = state.processes.get("moto")
    if moto is not None and moto.alive():
        registry = AdapterRegistry(store).state(state.model, state.stage)
    else:
        errors.print("[yellow]the emulated AWS is not running: no registry to show; `llmfleet local up` restarts the fleet[/]")
        registry = RegistryState.empty(state.model, state.stage)
    row = model_status(
        model=state.model,
        stage=state.stage,
        deployment=Deployment(
            LOCAL,
            state.server_url,
            desired=1,
            running=int(serving),
            instance_type=f"local CPU (AWS: {state.plan_instance_type})",
            state="serving" if serving else "down",
        ),
        unit_cost_per_hour_usd=state.plan_cost_per_hour_usd,
        promoted=promoted_versions(registry),
        servers=servers,
        expected={s.server_id: adapters_for_server(registry, s.server_id) for s in servers},
        metrics=metrics,
        standin=True,
    )
    return [row]


def _fmt(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:g}{unit}"


def _render(rows: list[ModelStatus], title: str) -> None:
    """Two tables: capacity and load per model and target, then adapter versions per server."""
    capacity = Table(title=title, title_justify="left")
    for column in ("model", "target", "tasks", "instance", "queue", "p50/p99 ms", "last boot", "$/h"):
        capacity.add_column(column, justify="left" if column in ("model", "target", "instance") else "right")
    adapters = Table(title="adapters: loaded per server vs the registry", title_justify="left")
    for column in ("model", "server", "adapter", "loaded", "registry"):
        adapters.add_column(column)
    for row in rows:
        model = row.model + (f" [yellow]({STANDIN_LABEL})[/]" if row.standin else "")
        tasks = f"{row.running}/{row.desired}" + (f" +{row.pending}" if row.pending else "")
        if row.healthy is not None:
            tasks += f" ({row.healthy} healthy)"
        capacity.add_row(
            model,
            row.target + (f"\n{row.state}" if row.state else ""),
            tasks,
            row.instance_type,
            _fmt(row.metrics.queue_depth),
            f"{_fmt(row.metrics.latency_p50_ms)}/{_fmt(row.metrics.latency_p99_ms)}",
            _fmt(row.metrics.last_boot_seconds and round(row.metrics.last_boot_seconds), " s"),
            f"{row.cost_per_hour_usd:.2f}",
        )
        for server in row.servers:
            names = sorted(set(server.adapters) | set(server.expected))
            for name in names or ["-"]:
                loaded = server.adapters.get(name) if not server.error else f"[dim]({escape(server.error)})[/]"
                mark = " [red]drift[/]" if name in server.drift else ""
                adapters.add_row(row.model, escape(server.server_id), name, (loaded or "-") + mark, server.expected.get(name, "-"))
        if not row.servers:
            for name, version in row.promoted.items():
                adapters.add_row(row.model, "[dim](no server)[/]", name, "-", version)
    console.print(capacity)
    console.print(adapters)
    for row in rows:
        for server in row.servers:
            if server.boot:
                console.print(f"[dim]{escape(row.model)} {escape(server.server_id)} started in {escape(server.boot)}[/]", highlight=False)


def status(
    fleet: FleetOpt = None,
    stage: Annotated[str | None, typer.Option("--stage", "-s", help="The stage (default: the fleet's).")] = None,
    aws: Annotated[bool, typer.Option("--aws", help="Query the AWS account even when a local fleet is up.")] = False,
    region: Annotated[str | None, typer.Option("--region", help="AWS region (default: the fleet's).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Per model: tasks running/desired, instance, adapter versions per server, queue, latency, $/h."""
    state = None if aws else local_fleet.find_state_dir().load()
    if state is not None:
        rows = local_status_rows(state)
        title = f"local fleet {state.fleet} ({state.stage}) — {STANDIN_LABEL} model; $/h is the plan's AWS price"
        notes = [f"not started locally: {', '.join(state.not_started)}"] if state.not_started else []
    else:
        manifest, plans = load_and_plan(fleet_file(fleet))
        chosen_stage = stage or manifest.stage
        session = boto3.Session(region_name=region or manifest.region)
        with errors.status(f"reading the AWS account ({session.region_name})"):
            try:
                rows = aws_status_rows(plans, chosen_stage, session, warn=lambda note: errors.print(f"[yellow]{escape(note)}[/]"))
            except (BotoCoreError, ClientError) as exc:  # access denied, endpoint down; no credentials: what to set
                raise AwsError(f"cannot read the AWS account ({type(exc).__name__}): {exc}") from exc
        title = f"fleet {manifest.name} ({chosen_stage}, {session.region_name})"
        found = {row.model for row in rows}
        notes = [f"no deployment found for: {', '.join(p.model_name for p in plans if p.model_name not in found)}"] if len(found) < len(plans) else []
    if as_json:
        print(json.dumps({"title": title, "models": [row.to_json() for row in rows],
                          "cost_per_hour_usd": fleet_cost_per_hour(rows), "notes": notes}, indent=2))
        return
    _render(rows, title)
    console.print(f"fleet $/h now: {fleet_cost_per_hour(rows):.2f}", highlight=False)
    for note in notes:
        console.print(f"[dim]{escape(note)}[/]")
