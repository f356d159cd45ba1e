"""The wheel as a platform team installs it: built from this checkout, installed with its
declared dependencies (pinned by requirements/lock.txt, as the CI example installs it) into
a clean virtual environment, and run from a project of the user's own that has `stacks/`
and `scripts/` packages of its own: ours live under the `llmfleet` namespace, so neither
shadows the other. The CLI starts, plans the example fleet, prints its version, and a
command whose extra is missing says which extra to install."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.conftest import REPO

INSTALL_TIMEOUT_SECONDS = 900


def run(argv: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "VIRTUAL_ENV", "LLMFLEET_"))}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the clean venv's bin directory, the user's project) with the wheel installed."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"  # a copy: building writes build/ and *.egg-info beside the sources
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".*", "node_modules", "cdk.out", "build", "*.egg-info", "tests"))
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(work / "dist"), str(source)], work, INSTALL_TIMEOUT_SECONDS)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (work / "dist").glob("llmfleet_aws-*.whl")
    venv.EnvBuilder(with_pip=True).create(work / "venv")
    bin_dir = work / "venv" / "bin"
    pip = [str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "-c", str(REPO / "requirements/lock.txt")]
    installed = run([*pip, str(wheel)], work, INSTALL_TIMEOUT_SECONDS)
    assert installed.returncode == 0, installed.stderr[-3000:]
    project = work / "their-project"
    for package in ("stacks", "scripts"):
        (project / package).mkdir(parents=True)
        (project / package / "__init__.py").write_text("raise ImportError('the user project package, not llmfleet')\n")
    shutil.copy(REPO / "fleet.yaml", project / "fleet.yaml")
    shutil.copy(REPO / "fleet.lock.json", project / "fleet.lock.json")
    return bin_dir, project


def test_the_installed_cli_starts_and_plans_the_fleet_beside_the_users_own_packages(installed) -> None:
    bin_dir, project = installed
    version = run([str(bin_dir / "llmfleet"), "--version"], project)
    plan = run([str(bin_dir / "llmfleet"), "plan", "--json"], project)

    assert version.returncode == 0 and version.stdout.startswith("llmfleet "), version.stderr
    assert plan.returncode == 0, plan.stderr
    assert '"models"' in plan.stdout and "instance_type" in plan.stdout


def test_a_command_whose_extra_is_missing_names_the_extra_in_one_line(installed) -> None:
    bin_dir, project = installed
    local = run([str(bin_dir / "llmfleet"), "local", "up"], project)
    sagemaker = run([str(bin_dir / "llmfleet"), "invoke", "some-model", "hi", "--sagemaker", "some-endpoint"], project)

    for result, extra in ((local, "local"),):
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().count("\n") == 0, result.stderr
        assert f"pip install 'llmfleet-aws[{extra}]'" in result.stderr


def test_the_wheel_installs_one_llmfleet_namespace_with_the_serving_image_and_known_configs(installed) -> None:
    bin_dir, project = installed
    site = next((bin_dir.parent / "lib").glob("python3*/site-packages"))
    theirs = run([str(bin_dir / "python"), "-c", "import stacks"], project)
    ours = run([str(bin_dir / "python"), "-c", "import llmfleet.scripts.cli, llmfleet.model_store.plan"], project)

    assert not {"model_store", "stacks", "containers", "scripts"} & {path.name for path in site.iterdir()}
    assert (site / "llmfleet" / "containers" / "vllm" / "Dockerfile").is_file()
    assert any((site / "llmfleet" / "model_store" / "known_configs").glob("*.json"))
    assert "the user project package, not llmfleet" in theirs.stderr, "the project's own `stacks` is the one imported"
    assert ours.returncode == 0, ours.stderr
