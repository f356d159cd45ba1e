"""The wheel as a platform team installs it: built from this checkout, installed with its
declared dependencies (pinned by requirements/lock.txt, as the CI example installs it) into
a clean virtual environment, and run from a project of the user's own that has `stacks/`
and `scripts/` packages of its own: ours live under the `llmfleet` namespace, so neither
shadows the other. The CLI starts, plans the example fleet, prints its version, and a
command whose extra is missing says which extra to install. With the `cdk` extra, in a venv of
its own, the team's own CDK app (examples/own-app) embeds LlmFleet and synthesizes, cdk-nag on,
its serving image staged from the Dockerfile and sources that ship in the wheel."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.conftest import REPO

INSTALL_TIMEOUT_SECONDS = 900


def run(argv: list[str], cwd: Path, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    own = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "VIRTUAL_ENV", "LLMFLEET_", "CDK_"))}
    return subprocess.run(argv, cwd=cwd, env=own | env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"  # a copy: building writes build/ and *.egg-info beside the sources
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".*", "node_modules", "cdk.out", "build", "*.egg-info", "tests"))
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(work / "dist"), str(source)], work, INSTALL_TIMEOUT_SECONDS)
    assert built.returncode == 0, built.stderr[-3000:]
    (found,) = (work / "dist").glob("llmfleet_aws-*.whl")
    return found


def install(wheel: Path, work: Path, extras: str = "") -> Path:
    """A clean venv in `work` with the wheel (and `extras`) installed as the lock pins them; its bin directory."""
    venv.EnvBuilder(with_pip=True).create(work / "venv")
    bin_dir = work / "venv" / "bin"
    pip = [str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "-c", str(REPO / "requirements/lock.txt")]
    installed = run([*pip, f"{wheel}{extras}"], work, INSTALL_TIMEOUT_SECONDS)
    assert installed.returncode == 0, installed.stderr[-3000:]
    return bin_dir


def their_project(path: Path, *files: Path) -> Path:
    """A project with `stacks` and `scripts` packages of its own (each refuses to be imported as ours) and `files`."""
    for package in ("stacks", "scripts"):
        (path / package).mkdir(parents=True)
        (path / package / "__init__.py").write_text("raise ImportError('the user project package, not llmfleet')\n")
    for file in files:
        shutil.copy(file, path / file.name)
    return path


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the clean venv's bin directory, the user's project) with the wheel installed."""
    work = tmp_path_factory.mktemp("core")
    project = their_project(work / "their-project", REPO / "fleet.yaml", REPO / "fleet.lock.json")
    return install(wheel, work), project


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

    for result, extra in ((local, "local"),):
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().count("\n") == 0, result.stderr
        assert f"pip install 'llmfleet-aws[{extra}]'" in result.stderr


def test_the_wheel_installs_one_llmfleet_namespace_with_the_serving_image_and_known_configs(installed) -> None:
    bin_dir, project = installed
    site = next((bin_dir.parent / "lib").glob("python3*/site-packages"))
    theirs = run([str(bin_dir / "python"), "-c", "import stacks"], project)
    ours = run([str(bin_dir / "python"), "-c", "import llmfleet.scripts.cli, llmfleet.model_store.contract.plan"], project)

    assert not {"model_store", "stacks", "containers", "scripts"} & {path.name for path in site.iterdir()}
    assert (site / "llmfleet" / "containers" / "vllm" / "Dockerfile").is_file()
    assert any((site / "llmfleet" / "model_store" / "known_configs").glob("*.json"))
    assert "the user project package, not llmfleet" in theirs.stderr, "the project's own `stacks` is the one imported"
    assert ours.returncode == 0, ours.stderr


def test_the_users_own_cdk_app_embeds_the_fleet_and_synthesizes_from_the_installed_wheel(
    wheel: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    work = tmp_path_factory.mktemp("cdk")
    example = REPO / "examples" / "own-app"
    project = their_project(work / "their-app", example / "app.py", example / "fleet.yaml")
    bin_dir = install(wheel, work, "[cdk]")
    # What `cdk synth` hands the app from its cdk.json: the image's placeholder digest, the feature flags.
    context = json.loads((example / "cdk.json").read_text())["context"]
    out = work / "cdk.out"

    synth = run([str(bin_dir / "python"), "app.py"], project, 600, CDK_CONTEXT_JSON=json.dumps(context), CDK_OUTDIR=str(out))

    assert synth.returncode == 0, synth.stderr[-3000:]
    template = json.loads((out / "acme-inference.template.json").read_text())
    types = {resource["Type"] for resource in template["Resources"].values()}
    assert {"AWS::EC2::VPC", "AWS::ECS::Service", "AWS::SageMaker::Endpoint", "AWS::ElasticLoadBalancingV2::LoadBalancer"} <= types
    (image,) = json.loads((out / "acme-inference.assets.json").read_text())["dockerImages"].values()
    staged = out / image["source"]["directory"]
    assert image["source"]["dockerFile"] == "containers/vllm/Dockerfile"
    for path in ("containers/vllm/Dockerfile", "containers/entrypoint/__main__.py", "model_store/planning/text.py"):
        assert (staged / path).is_file(), f"the image's build context lacks {path}"
