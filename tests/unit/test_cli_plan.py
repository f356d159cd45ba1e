"""`llmfleet plan` and `llmfleet schema`: output, JSON keys and exit codes CI can trust."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import save_file
from pathlib import Path

from typer.testing import CliRunner

from llmfleet.scripts.cli import app

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()

REQUIRED_KEYS = {
    "name",
    "instance_type",
    "tensor_parallel_size",
    "weights_bytes",
    "kv_bytes_per_token",
    "max_concurrency",
    "gpu_memory_utilization",
    "cost_per_hour_usd",
    "vllm_args",
}


def test_plan_json_has_the_documented_keys_for_every_model() -> None:
    result = runner.invoke(app, ["plan", "-f", str(REPO / "fleet.yaml"), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["fleet"] == "demo"
    assert len(document["models"]) == 5
    for model in document["models"]:
        assert REQUIRED_KEYS <= set(model)
        assert model["vllm_args"][0] == "--model"
        assert model["cost_per_hour_usd"] > 0
    by_name = {m["name"]: m for m in document["models"]}
    assert by_name["r1-distill-14b"]["kv_bytes_per_token"] == 196_608


def test_plan_table_names_every_model_and_explains(tmp_path: Path) -> None:
    result = runner.invoke(app, ["plan", "-f", str(REPO / "fleet.yaml")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in ("qwen3-small", "r1-distill-14b", "mistral-small-24b-fp8", "llama3-70b", "qwen25-7b-awq"):
        assert name in result.stdout
    assert "is the cheapest of" in result.stdout
    assert "KV cache 192 KiB/token" in result.stdout


def test_plan_exit_codes(tmp_path: Path) -> None:
    too_big = tmp_path / "big.yaml"
    too_big.write_text(
        "name: f\nmodels:\n  - name: big\n    source: s3://llmfleet-store/models/big\n"
        "    architecture: meta-llama/Meta-Llama-3-70B-Instruct\n    serving: {instance_type: g6.xlarge}\n"
    )
    refused = runner.invoke(app, ["plan", "-f", str(too_big)])
    assert refused.exit_code == 1
    assert "fits no pinned instance" in refused.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: f\nmodels:\n  - name: x\n    source: s3://llmfleet-store/models/x\n    architecture: Qwen/Qwen3-8B\n    dtpye: float16\n")
    invalid = runner.invoke(app, ["plan", "-f", str(bad)])
    assert invalid.exit_code == 2
    assert "bad.yaml:6: model 'x', field 'dtpye': unknown key" in invalid.output
    missing = runner.invoke(app, ["plan", "-f", str(tmp_path / "absent.yaml")])
    assert missing.exit_code == 2


def test_plan_reads_a_local_checkpoint_directory(tmp_path: Path) -> None:
    model_dir = tmp_path / "models" / "tiny"
    model_dir.mkdir(parents=True)
    config = json.loads((REPO / "model_store/known_configs/Qwen__Qwen3-0.6B.json").read_text())
    (model_dir / "config.json").write_text(json.dumps(config))
    # Two shards whose headers say 3 MiB of bf16 and 1 MiB of fp8: the plan counts those bytes.
    save_file({"a": np.zeros((1024, 1536), dtype=np.float16)}, model_dir / "model-00001-of-00002.safetensors")
    save_file({"b": np.zeros((1024, 1024), dtype=np.uint8)}, model_dir / "model-00002-of-00002.safetensors")
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("name: f\nmodels:\n  - name: tiny\n    source: models/tiny\n")
    result = runner.invoke(app, ["plan", "-f", str(fleet), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["models"][0]["weights_bytes"] == 4 * 2**20
    # A consolidated copy beside indexed shards (as Mistral repositories ship) is not loaded.
    save_file({"a": np.zeros((2048, 1024), dtype=np.float16)}, model_dir / "consolidated.safetensors")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (model_dir / "model.safetensors.index.json").write_text(json.dumps(index))
    again = runner.invoke(app, ["plan", "-f", str(fleet), "--json"])
    assert json.loads(again.stdout)["models"][0]["weights_bytes"] == 4 * 2**20


def test_schema_writes_json_schema(tmp_path: Path) -> None:
    target = tmp_path / "fleet.schema.json"
    result = runner.invoke(app, ["schema", "--output", str(target)])
    assert result.exit_code == 0
    assert json.loads(target.read_text())["title"] == "llmfleet fleet manifest"


@pytest.mark.parametrize(("flags", "committed"), [([], "fleet.schema.json"), (["--consumers"], "consumers.schema.json")])
def test_committed_schema_is_current(flags: list[str], committed: str) -> None:
    """fleet.yaml and consumers files point editors at these schemas; `make schema` regenerates them."""
    result = runner.invoke(app, ["schema", *flags])
    assert json.loads(result.stdout) == json.loads((REPO / committed).read_text())


def test_the_cli_is_a_package_without_a_cycle() -> None:
    """Command modules share scripts/cli_common.py; only scripts/cli.py assembles the app,
    so any module imports first and `python -m llmfleet.scripts` runs the CLI."""
    import ast
    import subprocess
    import sys

    for path in (REPO / "scripts").glob("*.py"):
        if path.name in ("cli.py", "__main__.py"):
            continue
        imported = {node.module for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ImportFrom)}
        assert "llmfleet.scripts.cli" not in imported, path.name
    result = subprocess.run([sys.executable, "-m", "llmfleet.scripts", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "verify" in result.stdout and "lock" in result.stdout
