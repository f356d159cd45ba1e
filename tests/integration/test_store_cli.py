"""`llmfleet model ...` / `llmfleet adapter ...` as CI runs them: flags, env, --json, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmfleet.scripts.cli import app
from llmfleet.scripts.cli_common import EXIT_BAD_INPUT, EXIT_REFUSED
from tests.integration.conftest import MODEL, bucket_snapshot, write_adapter, write_model

FLEET_YAML = """
name: demo
models:
  - name: tiny
    source: s3://llmfleet-store/models/tiny
    architecture: Qwen/Qwen3-0.6B
    revision: r2
    aliases: [/ckpt/tiny]
    lora: {max_rank: 16}
"""


@pytest.fixture
def llmfleet(store_uri: str, aws_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run the CLI with LLMFLEET_STORE set, as a CI job would, in a folder without a
    fleet.yaml (unless a test writes one); returns the click Result."""
    monkeypatch.setenv("LLMFLEET_STORE", store_uri)
    monkeypatch.setenv("GITHUB_ACTOR", "octocat")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return run


def ok_json(result) -> dict | list:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_upload_publish_promote_list_history_rollback(llmfleet, tmp_path: Path) -> None:
    uploaded = ok_json(
        llmfleet("model", "upload", write_model(tmp_path / "m"), "--model", MODEL, "--revision", "main", "--json")
    )
    assert (
        uploaded["version"] == "main" and uploaded["files"] == 2 and uploaded["uri"].endswith("/fleet/models/tiny/main")
    )

    plain = llmfleet(
        "adapter", "publish", write_adapter(tmp_path / "a1", seed=1), "--model", MODEL, "--name", "medical"
    )
    assert plain.exit_code == 0, plain.stderr
    v1 = plain.stdout.strip()
    published = ok_json(
        llmfleet("adapter", "publish", write_adapter(tmp_path / "a2", seed=2), "-m", MODEL, "-n", "medical", "--json")
    )
    v2 = published["version"]
    assert published["rank"] == 8 and published["uploader"] == "octocat" and v2 != v1
    assert ok_json(llmfleet("adapter", "versions", "medical", "-m", MODEL, "--json"))["versions"] == [v1, v2]

    ok_json(llmfleet("adapter", "promote", f"medical@{v1}", "--model", MODEL, "--stage", "prod", "--json"))
    promoted = ok_json(
        llmfleet("adapter", "promote", f"medical@{v2}", "-m", MODEL, "-s", "prod", "--fraction", "0.25", "--json")
    )
    assert promoted == {
        "model": MODEL, "stage": "prod", "generation": 2, "name": "medical",
        "version": v2, "previous_version": v1, "fraction": 0.25,
    }  # fmt: skip
    listed = ok_json(llmfleet("adapter", "list", "-m", MODEL, "-s", "prod", "--json"))
    assert listed["adapters"] == {"medical": {"version": v2, "previous_version": v1, "fraction": 0.25}}

    back = ok_json(llmfleet("adapter", "rollback", "medical", "-m", MODEL, "-s", "prod", "--json", "--actor", "oncall"))
    assert back["version"] == v1 and back["fraction"] == 1.0
    history = ok_json(llmfleet("adapter", "history", "medical", "-m", MODEL, "-s", "prod", "--json"))
    assert [(h["actor"], h["action"], h["to"]) for h in history] == [
        ("octocat", "promote", v1),
        ("octocat", "promote", v2),
        ("oncall", "rollback", v1),
    ]
    table = llmfleet("adapter", "history", "medical", "-m", MODEL, "-s", "prod")
    assert table.exit_code == 0 and "rollback" in table.stdout and "oncall" in table.stdout

    retired = ok_json(llmfleet("adapter", "retire", "medical", "-m", MODEL, "-s", "prod", "--json"))
    assert retired["version"] is None
    assert ok_json(llmfleet("adapter", "list", "-m", MODEL, "-s", "prod", "--json"))["adapters"] == {}


def test_a_rejected_adapter_exits_1_naming_the_rule(llmfleet, tmp_path: Path) -> None:
    llmfleet("model", "upload", write_model(tmp_path / "m"), "--model", MODEL, "--json")
    result = llmfleet(
        "adapter", "publish", write_adapter(tmp_path / "a", base="other"), "-m", MODEL, "-n", "medical", "--json"
    )
    assert result.exit_code == EXIT_REFUSED
    assert "adapter rejected [base_model]" in result.stderr
    assert json.loads(result.stdout) | {"error": None} == {
        "error": None,
        "rule": "base_model",
        "kind": "AdapterRejected",
    }


def test_the_fleet_sets_rank_ceiling_base_revision_and_aliases(llmfleet, tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET_YAML)
    llmfleet("model", "upload", write_model(tmp_path / "m"), "--model", MODEL, "--revision", "r2")
    too_big = llmfleet(
        "adapter",
        "publish",
        write_adapter(tmp_path / "a", rank=32, base="/ckpt/tiny"),
        "-m",
        MODEL,
        "-n",
        "x",
        "--fleet",
        fleet,
    )
    assert too_big.exit_code == EXIT_REFUSED and "lora.max_rank 16" in too_big.stderr
    fits = ok_json(
        llmfleet(
            "adapter",
            "publish",
            write_adapter(tmp_path / "b", rank=16, base="/ckpt/tiny"),
            "-m",
            MODEL,
            "-n",
            "x",
            "--fleet",
            fleet,
            "--json",
        )
    )
    assert fits["base_model"] == "/ckpt/tiny"
    bad_fleet = tmp_path / "bad.yaml"
    bad_fleet.write_text("name: demo\nmodels: []\n")
    assert (
        llmfleet("adapter", "publish", tmp_path / "b", "-m", MODEL, "-n", "x", "--fleet", bad_fleet).exit_code
        == EXIT_BAD_INPUT
    )


def test_a_second_publish_of_a_version_exits_1(llmfleet, tmp_path: Path) -> None:
    llmfleet("model", "upload", write_model(tmp_path / "m"), "--model", MODEL)
    adapter = write_adapter(tmp_path / "a")
    assert llmfleet("adapter", "publish", adapter, "-m", MODEL, "-n", "medical", "--version", "v1").exit_code == 0
    again = llmfleet("adapter", "publish", adapter, "-m", MODEL, "-n", "medical", "--version", "v1")
    assert again.exit_code == EXIT_REFUSED and "versions are immutable" in again.stderr


def test_refusals_exit_1(llmfleet, tmp_path: Path) -> None:
    unpublished = llmfleet("adapter", "promote", "medical@v9", "-m", MODEL, "-s", "prod")
    assert unpublished.exit_code == EXIT_REFUSED and "is not published" in unpublished.stderr
    nothing = llmfleet("adapter", "rollback", "medical", "-m", MODEL, "-s", "prod")
    assert nothing.exit_code == EXIT_REFUSED and "not registered" in nothing.stderr
    no_base = llmfleet("adapter", "publish", write_adapter(tmp_path / "a"), "-m", MODEL, "-n", "medical")
    assert no_base.exit_code == EXIT_REFUSED and "has no complete revision in the store" in no_base.stderr


def test_publish_finds_the_stores_only_revision_and_lists_several(llmfleet, tmp_path: Path) -> None:
    llmfleet("model", "upload", write_model(tmp_path / "m"), "--model", MODEL, "--revision", "r1")
    published = llmfleet("adapter", "publish", write_adapter(tmp_path / "a"), "-m", MODEL, "-n", "medical", "--json")
    assert published.exit_code == 0, published.output  # validated against r1, not a missing main
    llmfleet("model", "upload", write_model(tmp_path / "m"), "--model", MODEL, "--revision", "r2")
    ambiguous = llmfleet("adapter", "publish", write_adapter(tmp_path / "b", seed=5), "-m", MODEL, "-n", "legal")
    assert ambiguous.exit_code == EXIT_REFUSED and "has revisions ['r1', 'r2']" in ambiguous.stderr
    assert "--model-revision" in ambiguous.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("adapter", "promote", "medical", "-m", MODEL, "-s", "prod"),
        ("adapter", "promote", "medical@", "-m", MODEL, "-s", "prod"),
        ("adapter", "promote", "../x@v1", "-m", MODEL, "-s", "prod"),
        ("adapter", "promote", "medical@v1", "-m", MODEL, "-s", "prod", "--fraction", "1.5"),
        ("adapter", "history", "a/b", "-m", MODEL, "-s", "prod"),
        ("adapter", "list", "-m", MODEL),
        ("model", "upload", "does-not-exist", "--model", MODEL),
    ],
    ids=["no-version", "empty-version", "unsafe-name", "fraction", "unsafe-history-name", "no-stage", "no-directory"],
)
def test_bad_input_exits_2(llmfleet, args: tuple[str, ...]) -> None:
    assert llmfleet(*args).exit_code == EXIT_BAD_INPUT


def test_the_store_comes_from_flag_or_environment(llmfleet, monkeypatch: pytest.MonkeyPatch, store_uri: str) -> None:
    monkeypatch.delenv("LLMFLEET_STORE")
    missing = llmfleet("adapter", "list", "-m", MODEL, "-s", "prod")
    assert missing.exit_code == EXIT_BAD_INPUT and "LLMFLEET_STORE" in missing.stderr
    assert llmfleet("adapter", "list", "-m", MODEL, "-s", "prod", "--store", "http://x").exit_code == EXIT_BAD_INPUT
    assert (
        ok_json(llmfleet("adapter", "list", "-m", MODEL, "-s", "prod", "--store", store_uri, "--json"))["generation"]
        == 0
    )


def test_validate_runs_publishs_checks_against_the_store_and_writes_nothing(
    llmfleet, tmp_path: Path, s3, bucket: str
) -> None:
    llmfleet("model", "upload", write_model(tmp_path / "m"), "--model", MODEL)
    before = bucket_snapshot(s3, bucket)

    valid = llmfleet("adapter", "validate", write_adapter(tmp_path / "a"), "-m", MODEL)
    wrong_base = llmfleet("adapter", "validate", write_adapter(tmp_path / "b", base="other"), "-m", MODEL, "--json")

    assert valid.exit_code == 0, valid.stderr
    assert valid.stdout.startswith("valid: ") and "rank 8, targets q_proj, v_proj" in valid.stdout
    assert wrong_base.exit_code == EXIT_REFUSED
    lines = [line for line in wrong_base.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "adapter rejected [base_model]" in lines[0]
    assert json.loads(wrong_base.stdout)["rule"] == "base_model"
    assert bucket_snapshot(s3, bucket) == before  # validated, never uploaded


def test_validate_without_a_store_checks_against_the_fleets_lock(
    llmfleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLMFLEET_STORE")
    write_model(tmp_path / "tiny-checkpoint")
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "name: demo\nmodels:\n  - name: tiny\n    source: ./tiny-checkpoint\n    max_model_len: 1024\n"
        "    lora: {max_rank: 8}\n"
    )

    valid = ok_json(llmfleet("adapter", "validate", write_adapter(tmp_path / "a"), "-f", fleet, "-m", MODEL, "--json"))
    too_big = llmfleet("adapter", "validate", write_adapter(tmp_path / "b", rank=16), "-f", fleet, "-m", MODEL)
    unknown_module = llmfleet(
        "adapter",
        "validate",
        write_adapter(tmp_path / "c", config={"target_modules": ["c_attn"]}),
        *("-f", fleet, "-m", MODEL),
    )
    no_such_model = llmfleet("adapter", "validate", tmp_path / "a", "-f", fleet, "-m", "other")

    assert (valid["valid"], valid["rank"], valid["base_model"]) == (True, 8, MODEL)
    assert too_big.exit_code == EXIT_REFUSED and "adapter rejected [rank]" in too_big.stderr
    assert unknown_module.exit_code == EXIT_REFUSED and "adapter rejected [target_modules]" in unknown_module.stderr
    assert no_such_model.exit_code == EXIT_BAD_INPUT and "no model 'other'" in no_such_model.stderr


def test_store_and_stage_come_from_the_fleet_manifest_unless_given(
    llmfleet, monkeypatch: pytest.MonkeyPatch, store_uri: str, tmp_path: Path
) -> None:
    monkeypatch.delenv("LLMFLEET_STORE")
    (tmp_path / "fleet.yaml").write_text(
        f"name: demo\nstage: staging\nstore: {store_uri}\nmodels:\n"
        f"  - name: {MODEL}\n    architecture: Qwen/Qwen3-0.6B\n    lora: {{max_rank: 16}}\n"
    )
    uploaded = ok_json(llmfleet("model", "upload", write_model(tmp_path / "m"), "-m", MODEL, "--json"))
    assert uploaded["uri"] == f"{store_uri}/models/{MODEL}/main"
    version = ok_json(llmfleet("adapter", "publish", write_adapter(tmp_path / "a"), "-m", MODEL, "-n", "medical", "--json"))["version"]
    promoted = ok_json(llmfleet("adapter", "promote", f"medical@{version}", "-m", MODEL, "--json"))
    assert (promoted["stage"], promoted["version"]) == ("staging", version)
    assert ok_json(llmfleet("adapter", "list", "-m", MODEL, "--json"))["adapters"] == {
        "medical": {"version": version, "previous_version": None, "fraction": 1.0}
    }
    assert ok_json(llmfleet("adapter", "list", "-m", MODEL, "-s", "prod", "--json"))["adapters"] == {}
    # LLMFLEET_STORE wins over the manifest, and --store over both.
    monkeypatch.setenv("LLMFLEET_STORE", "s3://no-such-bucket-for-llmfleet")
    elsewhere = llmfleet("adapter", "list", "-m", MODEL)
    assert elsewhere.exit_code == EXIT_REFUSED and "s3://no-such-bucket-for-llmfleet/" in elsewhere.stderr
    assert ok_json(llmfleet("adapter", "versions", "medical", "-m", MODEL, "--store", store_uri, "--json"))["versions"] == [version]


def test_another_manifest_through_the_environment(llmfleet, monkeypatch: pytest.MonkeyPatch, store_uri: str, tmp_path: Path) -> None:
    monkeypatch.delenv("LLMFLEET_STORE")
    named = tmp_path / "team" / "fleet.yaml"
    named.parent.mkdir()
    named.write_text(f"name: team\nstage: canary\nstore: {store_uri}\nmodels:\n  - {{name: {MODEL}, architecture: Qwen/Qwen3-0.6B}}\n")
    monkeypatch.setenv("LLMFLEET_FLEET", str(named))
    assert ok_json(llmfleet("adapter", "list", "-m", MODEL, "--json"))["stage"] == "canary"
    monkeypatch.delenv("LLMFLEET_FLEET")
    nothing = llmfleet("adapter", "list", "-m", MODEL)
    assert nothing.exit_code == EXIT_BAD_INPUT
    assert nothing.stderr.splitlines() == [
        "error: no stage: pass --stage; no fleet manifest names one (--fleet/-f FILE or LLMFLEET_FLEET, or ./fleet.yaml)"
    ]
