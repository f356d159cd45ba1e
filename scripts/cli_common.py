"""What every `llmfleet` command shares: the consoles, the exit codes CI relies on, the
common arguments, and the one way a domain error becomes an exit. Command modules import
this; `scripts/cli.py` assembles them into the app (no module imports the app)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from model_store import fleet as fleet_loading
from model_store.manifest import FleetManifest, ManifestError
from model_store.plan import PlanError, ServingPlan

EXIT_REFUSED = 1  # the request was refused: doesn't fit, rejected adapter, lost race...
EXIT_BAD_INPUT = 2  # bad input: manifest, flags

console = Console()
errors = Console(stderr=True)

FleetArg = Annotated[Path, typer.Argument(help="The fleet manifest.", show_default=True)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]


def fail(message: str, code: int) -> typer.Exit:
    """Print an error (taken literally: messages hold [brackets]) to stderr; return the Exit to raise."""
    errors.print("[bold red]error:[/]", escape(message), highlight=False, soft_wrap=True)
    return typer.Exit(code)


def load_and_plan(fleet_path: Path, stage: str | None = None) -> tuple[FleetManifest, list[ServingPlan]]:
    """Load a manifest and plan every model, turning domain errors into CLI exits."""
    try:
        return fleet_loading.load_and_plan(fleet_path, stage)
    except ManifestError as exc:
        raise fail(str(exc), EXIT_BAD_INPUT) from None
    except PlanError as exc:
        raise fail(f"{fleet_path}: cannot plan:\n{exc}", EXIT_REFUSED) from None
