"""`llmfleet`: the command line for people and CI pipelines.

A thin layer: read files and flags, call model_store, print rich tables or `--json`.
Exit codes: 0 success, 1 the request was refused (doesn't fit, rejected adapter, lost
race, AWS unreachable...), 2 bad input (manifest, flags, AWS credentials, region or token):
each llmfleet error carries its own, and the root group prints the error as one line
(`--debug`: with its traceback). Every command is registered here, in the order `--help`
lists them; the command modules share `scripts/cli_common.py` and never import this module.
"""

from __future__ import annotations

import typer

from llmfleet.scripts import (
    catalog_cli,
    gateway_cli,
    invoke_cli,
    local_cli,
    lock_cli,
    plan_cli,
    status_cli,
    store_cli,
    verify_cli,
)
from llmfleet.scripts.cli_common import FLEET_ENV, ErrorsAsExits, global_options

app = typer.Typer(
    name="llmfleet",
    help=(
        "Plan, deploy and operate vLLM fleets on AWS from one fleet.yaml.\n\n"
        f"Every command reads the fleet manifest from --fleet/-f FILE, else ${FLEET_ENV}, else ./fleet.yaml; "
        "--store and --stage default to the manifest's. --debug and --json go anywhere on the line."
    ),
    cls=ErrorsAsExits,
    callback=global_options,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command()(plan_cli.plan)
app.command()(lock_cli.lock)
app.command()(catalog_cli.catalog)
app.command()(plan_cli.schema)
app.command(name="verify")(verify_cli.verify_command)
app.add_typer(store_cli.model_app, name="model")
app.add_typer(store_cli.adapter_app, name="adapter")
app.command()(status_cli.status)
app.command()(invoke_cli.invoke)
app.add_typer(gateway_cli.gateway_app, name="gateway")
app.command()(gateway_cli.usage)
app.add_typer(local_cli.local_app, name="local")


def main() -> None:
    app()
