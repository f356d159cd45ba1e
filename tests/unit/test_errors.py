"""One error root: every llmfleet error carries its exit code, and the CLI turns any of them
into one line on stderr and that code (`--debug`: its traceback too)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmfleet.model_store.contract.container import EXIT_ARGV, EXIT_STORE
from llmfleet.model_store.errors import EXIT_BAD_INPUT, EXIT_REFUSED, LlmfleetError
from llmfleet.scripts.cli import app

PACKAGES = ("model_store", "containers", "scripts", "stacks")
# Before the root, these were the classes without a common base; each must be found below.
KNOWN = {
    "ManifestError", "ConfigError", "LockError", "HubError", "HubUnreachable", "PlanError", "VerifyRefused",
    "AdapterRejected", "RegistryError", "RegistryConflict", "CatalogError", "StatusError", "StoreError",
    "VersionExists", "EntrypointError", "ArgvRejected", "VllmRefused", "PayloadError", "LocalFleetError",
    "StackConfigError",
}  # fmt: skip

# The gateway's plug-ins import LiteLLM and redis, installed in the gateway's own venv only
# (.venv-gateway, requirements/gateway-lock.txt); they define no exception of their own.
GATEWAY_VENV_ONLY = {f"llmfleet.containers.gateway.{name}" for name in ("auth", "runtime", "usage")}

runner = CliRunner()


def project_exceptions() -> set[type[BaseException]]:
    """Every exception class defined in the project's packages (`__main__` modules run, so they are left out)."""
    found = set()
    for package_name in PACKAGES:
        package = importlib.import_module(f"llmfleet.{package_name}")
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
            if info.name.endswith("__main__") or info.name in GATEWAY_VENV_ONLY:
                continue
            module = importlib.import_module(info.name)
            found |= {
                cls
                for _, cls in inspect.getmembers(module, inspect.isclass)
                if issubclass(cls, BaseException) and cls.__module__ == module.__name__
            }
    return found


def test_every_project_exception_derives_from_the_root_with_an_exit_code() -> None:
    classes = project_exceptions()
    assert KNOWN <= {cls.__name__ for cls in classes}
    for cls in classes:
        assert issubclass(cls, LlmfleetError), f"{cls.__module__}.{cls.__name__} is not an LlmfleetError"
        # The serving container's failures have codes of their own (docs/container.md).
        allowed = (EXIT_REFUSED, EXIT_BAD_INPUT) + ((EXIT_STORE, EXIT_ARGV) if cls.__module__.startswith("llmfleet.containers") else ())
        assert cls.exit_code in allowed, f"{cls.__name__}.exit_code = {cls.exit_code!r}"


def test_a_bad_input_error_is_one_line_and_exit_2(tmp_path: Path) -> None:
    absent = tmp_path / "absent.yaml"
    result = runner.invoke(app, ["plan", "-f", str(absent)])
    assert result.exit_code == EXIT_BAD_INPUT
    assert result.stderr.splitlines() == [f"error: {absent}: cannot read the fleet manifest: No such file or directory"]


def test_a_refused_error_is_one_line_and_exit_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / ".llmfleet" / "state.json"
    state.parent.mkdir()
    state.write_text("not json")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["local", "down"])
    assert result.exit_code == EXIT_REFUSED
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {state}: unreadable") and "Traceback" not in result.output


def test_debug_shows_the_traceback_and_keeps_the_exit_code(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--debug", "plan", "-f", str(tmp_path / "absent.yaml")])
    assert result.exit_code == EXIT_BAD_INPUT
    assert result.stderr.startswith("Traceback (most recent call last):")
    assert "llmfleet.model_store.contract.manifest.ManifestError: " in result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: ")
