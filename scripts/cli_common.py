"""What every `llmfleet` command shares: the consoles, the exit codes CI relies on
(model_store/errors.py's, imported from here), the common options and where their defaults
come from (the fleet manifest: --fleet/-f, $LLMFLEET_FLEET, else ./fleet.yaml), the global
options, and the one way an error becomes an exit. Command modules import this;
`scripts/cli.py` assembles them into the app (no module imports the app)."""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import tomllib
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from llmfleet.model_store.planning import fleet as fleet_loading
from llmfleet.model_store.ops.aws_errors import explain
from llmfleet.model_store.contract.container import FLEET_ENV
from llmfleet.model_store.errors import EXIT_BAD_INPUT, EXIT_REFUSED, LlmfleetError
from llmfleet.model_store.contract.manifest import FleetManifest, load_fleet
from llmfleet.model_store.contract.plan import ServingPlan
from llmfleet.model_store.planning.fit import PlanError

console = Console()
errors = Console(stderr=True)

DEFAULT_FLEET = Path("fleet.yaml")
DISTRIBUTION = "llmfleet-aws"  # what `pip install` calls this package (pyproject.toml)
FLEET_WAYS = f"--fleet/-f FILE or {FLEET_ENV}"
# Flags taken anywhere on the line, as kubectl and the aws CLI take theirs (see hoist_global_flags).
DEBUG_FLAG = "--debug"  # the root group's
JSON_FLAG = "--json"  # the commands' own

JsonOpt = Annotated[bool, typer.Option(JSON_FLAG, help="Print machine-readable JSON instead of tables.")]
FleetOpt = Annotated[
    Path | None,
    typer.Option(
        "--fleet", "-f", envvar=FLEET_ENV, show_envvar=True, metavar="FILE",
        help=f"The fleet manifest (default: ./{DEFAULT_FLEET}).",
    ),
]  # fmt: skip


def fail(message: str, code: int) -> typer.Exit:
    """Print an error (taken literally: messages hold [brackets]) to stderr; return the Exit to raise."""
    errors.print("[bold red]error:[/]", escape(message), highlight=False, soft_wrap=True)
    return typer.Exit(code)


def require_extra(extra: str, *modules: str) -> None:
    """Refuse a command whose optional dependencies are not installed, in one line that names
    the extra installing them (pyproject.toml), rather than a ModuleNotFoundError traceback."""
    missing = [module for module in modules if importlib.util.find_spec(module) is None]
    if missing:
        raise fail(
            f"this command needs the '{extra}' extra ({', '.join(missing)} not installed): "
            f"pip install '{DISTRIBUTION}[{extra}]'",
            EXIT_BAD_INPUT,
        )


def require_vllm(build: str) -> None:
    """Refuse a command that starts vLLM where vLLM is not installed; `build` says which one
    and how to install it (vLLM is no extra: its CUDA and CPU builds are separate packages)."""
    if importlib.util.find_spec("vllm") is None:
        raise fail(f"this command starts vLLM, which is not installed: {build}", EXIT_BAD_INPUT)


def hoist_global_flags(args: list[str]) -> list[str]:
    """The command line as click parses it: `--debug` from anywhere to the front (the root
    group's), `--json` from anywhere to the end, where the command reads it (one without it
    refuses it). Nothing after `--` moves."""
    end = args.index("--") if "--" in args else len(args)
    head, tail = args[:end], args[end:]
    debug = [arg for arg in head if arg == DEBUG_FLAG]
    as_json = [arg for arg in head if arg == JSON_FLAG]
    return debug + [arg for arg in head if arg not in (DEBUG_FLAG, JSON_FLAG)] + as_json + tail


class ErrorsAsExits(TyperGroup):
    """The app's root group: global flags anywhere on the line (`hoist_global_flags`); an
    LlmfleetError or AWS failure from any command is one line on stderr and its exit code
    (model_store.ops.aws_errors says what to set for credentials, region and tokens); with
    `--debug`, the traceback first."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_flags(args))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (LlmfleetError, BotoCoreError, ClientError) as exc:  # never a click exit: it has printed its own
            error = explain(exc)
            if ctx.params.get("debug"):
                errors.print(traceback.format_exc(), end="", markup=False, highlight=False, soft_wrap=True)
            raise fail(str(error), error.exit_code) from None


def installed_version(
    entry_point: str, distributions: Iterable[importlib.metadata.Distribution], checkout: Path
) -> str:
    """The version of the distribution whose console script is `entry_point` (whatever the
    distribution is called), else of the source checkout's pyproject.toml (`python -m
    scripts` on a host where nothing is installed), else "unknown"."""
    for distribution in distributions:
        if any(ep.group == "console_scripts" and ep.value == entry_point for ep in distribution.entry_points):
            return distribution.version
    try:
        return tomllib.loads((checkout / "pyproject.toml").read_text())["project"]["version"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        entry_point = f"{__package__}.cli:main"
        checkout = Path(__file__).resolve().parents[1]
        version = installed_version(entry_point, importlib.metadata.distributions(), checkout)
        console.print(f"llmfleet {version}", highlight=False)
        raise typer.Exit()


def global_options(
    debug: Annotated[
        bool,
        typer.Option(
            DEBUG_FLAG, help="On an error, print its traceback before the one-line message (anywhere on the line)."
        ),
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """The app's global options; ErrorsAsExits reads `debug` from the context."""


def fleet_file(given: Path | None) -> Path:
    """The fleet manifest a command reads: the one given (--fleet/-f or $LLMFLEET_FLEET), else
    ./fleet.yaml, which must then be there."""
    if given is not None:
        return given
    if not DEFAULT_FLEET.is_file():
        raise fail(f"no fleet manifest: no {DEFAULT_FLEET} in {Path.cwd()}; pass {FLEET_WAYS}", EXIT_BAD_INPUT)
    return DEFAULT_FLEET


def optional_fleet(given: Path | None) -> FleetManifest | None:
    """The fleet manifest when one is given or ./fleet.yaml is there, else None."""
    if given is None and not DEFAULT_FLEET.is_file():
        return None
    return load_fleet(fleet_file(given))


def fleet_models(ctx: typer.Context, incomplete: str) -> list[str]:
    """Shell completion of --model: the fleet manifest's model names (none without a
    manifest that parses)."""
    try:
        manifest = optional_fleet(ctx.params.get("fleet"))
    except LlmfleetError:
        return []
    return [spec.name for spec in manifest.models if spec.name.startswith(incomplete)] if manifest else []


def from_fleet(
    value: str | None, fleet: Path | None, what: str, read: Callable[[FleetManifest], str | None], how: str
) -> str:
    """A setting its flag or environment variable left unset (`value` None), read from the
    fleet manifest; bad input saying every way to give it when the manifest has none."""
    if value is not None:
        return value
    manifest = optional_fleet(fleet)
    found = read(manifest) if manifest is not None else None
    if found is None:
        if manifest is None:
            where = f"no fleet manifest names one ({FLEET_WAYS}, or ./{DEFAULT_FLEET})"
        else:
            where = f"{fleet_file(fleet)} names none"
        raise fail(f"no {what}: {how}; {where}", EXIT_BAD_INPUT)
    return found


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
