"""`llmfleet gateway keys create|rotate|list` and `llmfleet usage`: consumers' keys (hashes in
Secrets Manager, a key printed once) and their usage (the gateway's rows in Postgres)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import boto3
import typer
from rich.table import Table

from llmfleet.model_store.gateway.consumers import load_consumers
from llmfleet.model_store.gateway.contract import gateway_keys_secret_name, USAGE_DATABASE_URL_ENV
from llmfleet.model_store.gateway.keys import GatewayKeys
from llmfleet.model_store.gateway.usage import parse_since, SUMMARY, summary_params, UsageSummary
from llmfleet.model_store.contract.manifest import load_fleet
from llmfleet.scripts.cli_common import (
    EXIT_BAD_INPUT,
    FleetOpt,
    JsonOpt,
    console,
    errors,
    fail,
    flag_values,
    fleet_file,
    require_extra,
)

gateway_app = typer.Typer(help="The fleet's one endpoint: consumers' keys.", no_args_is_help=True)
keys_app = typer.Typer(help="Consumers' keys: stored as sha256 hashes in Secrets Manager, printed once.", no_args_is_help=True)
gateway_app.add_typer(keys_app, name="keys")

ConsumerOpt = Annotated[str, typer.Option("--consumer", "-c", help="The consumer's name in the consumers file.")]
StageOpt = Annotated[str | None, typer.Option("--stage", "-s", help="The fleet stage (default: the manifest's).")]


def _keys(fleet: Path | None, stage: str | None) -> GatewayKeys:
    path = fleet_file(fleet)
    manifest = load_fleet(path)
    if manifest.gateway.consumers is None:
        raise fail(f"{path}: gateway.consumers names no consumers file; add one to give consumers keys", EXIT_BAD_INPUT)
    client = boto3.client("secretsmanager", region_name=os.environ.get("AWS_DEFAULT_REGION") or manifest.region)
    return GatewayKeys(client, gateway_keys_secret_name(manifest.name, stage or manifest.stage), load_consumers(manifest, path))


def _print_new_key(consumer: str, key: str, what: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"consumer": consumer, "key": key}))
        return
    errors.print(f"{what} for consumer {consumer!r}; it is shown once, only its hash is stored:", highlight=False)
    print(key)


@keys_app.command("create")
def keys_create(consumer: ConsumerOpt, fleet: FleetOpt = None, stage: StageOpt = None, as_json: JsonOpt = False) -> None:
    """A new key for the consumer, beside its others (roll over: create, move clients, then rotate)."""
    _print_new_key(consumer, _keys(fleet, stage).create(consumer), "new key", as_json)


@keys_app.command("rotate")
def keys_rotate(consumer: ConsumerOpt, fleet: FleetOpt = None, stage: StageOpt = None, as_json: JsonOpt = False) -> None:
    """A new key for the consumer replacing all of its others (they stop working within a minute)."""
    _print_new_key(consumer, _keys(fleet, stage).rotate(consumer), "new key (all others revoked)", as_json)


@keys_app.command("list")
def keys_list(fleet: FleetOpt = None, stage: StageOpt = None, as_json: JsonOpt = False) -> None:
    """Each consumer and its keys' short ids (the first 8 hex digits of each hash)."""
    listing = _keys(fleet, stage).list()
    if as_json:
        print(json.dumps([vars(entry) for entry in listing], indent=2))
        return
    table = Table("consumer", "keys", "key ids")
    for entry in listing:
        table.add_row(entry.consumer, str(entry.keys), " ".join(entry.key_ids) or "-")
    console.print(table)


def usage(
    since: Annotated[str, typer.Option(help="From when: a duration (90m, 24h, 30d) or a UTC date or time.")] = "30d",
    consumer: Annotated[str | None, typer.Option("--consumer", "-c", help="Only this consumer.")] = None,
    database: Annotated[
        str | None, typer.Option(help=f"The usage database, a postgresql:// URL (default: ${USAGE_DATABASE_URL_ENV}).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Requests, tokens, cost and median latency through the gateway, per consumer and model."""
    require_extra("gateway", "psycopg")
    import psycopg

    url = database or os.environ.get(USAGE_DATABASE_URL_ENV)
    if not url:
        raise fail(f"no usage database: pass --database or set {USAGE_DATABASE_URL_ENV} (`llmfleet local env` sets it)", EXIT_BAD_INPUT)
    with flag_values():
        start = parse_since(since, datetime.now(UTC))
    try:
        with psycopg.connect(url, connect_timeout=10) as connection:
            rows = [UsageSummary.from_row(r) for r in connection.execute(SUMMARY, summary_params(start, consumer)).fetchall()]
    except psycopg.errors.UndefinedTable:
        rows = []  # no request has passed the gateway yet
    except psycopg.OperationalError as exc:
        raise fail(f"usage database unreachable: {str(exc).strip().splitlines()[0]}", 1) from None
    if as_json:
        print(json.dumps({"since": start.isoformat(), "rows": [vars(r) for r in rows]}, indent=2))
        return
    table = Table("consumer", "model", "requests", "errors", "prompt tokens", "completion tokens", "cost $", "p50 ms",
                  title=f"gateway usage since {start:%Y-%m-%d %H:%M} UTC")
    for r in rows:
        table.add_row(r.consumer, r.model, str(r.requests), str(r.errors), f"{r.prompt_tokens:,}", f"{r.completion_tokens:,}",
                      f"{r.cost_usd:.4f}", f"{r.latency_p50_ms:.0f}")
    console.print(table)
