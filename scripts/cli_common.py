"""What every `llmfleet` command shares: the consoles, the exit codes CI relies on
(model_store/errors.py's, imported from here), the common arguments, and the one way a
domain error becomes an exit. Command modules import this; `scripts/cli.py` assembles them
into the app (no module imports the app)."""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from model_store import fleet as fleet_loading
from model_store.errors import EXIT_BAD_INPUT, EXIT_REFUSED, LlmfleetError
from model_store.manifest import FleetManifest
from model_store.plan import PlanError, ServingPlan

console = Console()
errors = Console(stderr=True)

FleetArg = Annotated[Path, typer.Argument(help="The fleet manifest.", show_default=True)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
FleetOpt = Annotated[Path, typer.Option("--fleet", "-f", help="The fleet manifest.")]


def fail(message: str, code: int) -> typer.Exit:
    """Print an error (taken literally: messages hold [brackets]) to stderr; return the Exit to raise."""
    errors.print("[bold red]error:[/]", escape(message), highlight=False, soft_wrap=True)
    return typer.Exit(code)


class ErrorsAsExits(TyperGroup):
    """The app's root group: an LlmfleetError from any command is one line on stderr and
    the error's exit code; with `--debug` (see `debug_option`), its traceback first."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LlmfleetError as exc:
            if ctx.params.get("debug"):
                errors.print(traceback.format_exc(), end="", markup=False, highlight=False, soft_wrap=True)
            raise fail(str(exc), exc.exit_code) from None


def debug_option(
    debug: Annotated[
        bool, typer.Option("--debug", help="On an error, print its traceback before the one-line message.")
    ] = False,
) -> None:
    """The app's global options; ErrorsAsExits reads `debug` from the context."""


@contextlib.contextmanager
def flag_values() -> Iterator[None]:
    """Around checks of a flag's value: any llmfleet error there is bad input (exit 2),
    whatever the error's own code."""
    try:
        yield
    except LlmfleetError as exc:
        raise fail(str(exc), EXIT_BAD_INPUT) from None


@contextlib.contextmanager
def planning(fleet_path: Path) -> Iterator[None]:
    """A PlanError becomes the refusal exit, naming the manifest it came from."""
    try:
        yield
    except PlanError as exc:
        raise fail(f"{fleet_path}: cannot plan:\n{exc}", EXIT_REFUSED) from None


def load_and_plan(fleet_path: Path, stage: str | None = None) -> tuple[FleetManifest, list[ServingPlan]]:
    """Load a manifest and plan every model; other domain errors reach ErrorsAsExits."""
    with planning(fleet_path):
        return fleet_loading.load_and_plan(fleet_path, stage)
