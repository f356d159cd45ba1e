"""`npx cdk synth` of the example fleet on a clean checkout: no credentials, no lookups, all stacks."""

from __future__ import annotations

import json

from llmfleet.model_store.manifest import load_fleet
from tests.conftest import REPO
from tests.synth.conftest import CliSynth


def test_cli_synth_succeeds_without_credentials_or_lookups(cli_synth: CliSynth) -> None:
    assert cli_synth.returncode == 0, cli_synth.output[-4000:]
    fleet = load_fleet(REPO / "fleet.yaml")
    prefix = f"llmfleet-{fleet.name}-{fleet.stage}"
    expected = {f"{prefix}.template.json"} | {f"{prefix}-{m.name}.template.json" for m in fleet.models}
    assert {t.name for t in cli_synth.templates()} == expected  # no CI stack without -c github_repo
    manifest = json.loads((cli_synth.outdir / "manifest.json").read_text())
    assert "missing" not in manifest, manifest.get("missing")  # nothing asked of an AWS account
    for artifact in manifest["artifacts"].values():
        if artifact["type"] == "aws:cloudformation:stack":
            assert artifact["environment"] == f"aws://unknown-account/{fleet.region}"


def test_cli_synth_warns_loudly_about_plain_http_and_the_placeholder_base_image_and_nothing_else(cli_synth: CliSynth) -> None:
    fleet = load_fleet(REPO / "fleet.yaml")
    for model in fleet.models:
        if "ecs" in model.serving.targets:
            assert f"model {model.name}: the load balancer listens on plain HTTP" in cli_synth.output
    warnings = [line for line in cli_synth.output.splitlines() if line.startswith("WARNING")]
    http = [line for line in warnings if "listens on plain HTTP" in line]
    # cdk.json's vllm_image is a placeholder digest: synthesis works, a deploy needs the real one.
    placeholder = [line for line in warnings if "is a placeholder digest" in line and "-c vllm_image=" in line]
    assert len(http) == sum("ecs" in m.serving.targets for m in fleet.models)
    assert len(placeholder) == 1 and len(warnings) == len(http) + 1, warnings


def test_cli_synth_stages_the_serving_image_from_the_repository_root(cli_synth: CliSynth) -> None:
    fleet = load_fleet(REPO / "fleet.yaml")
    assets = json.loads((cli_synth.outdir / f"llmfleet-{fleet.name}-{fleet.stage}.assets.json").read_text())
    (image,) = assets["dockerImages"].values()
    assert image["source"]["dockerFile"] == "containers/vllm/Dockerfile"
    staged = cli_synth.outdir / image["source"]["directory"]
    assert (staged / "containers" / "vllm" / "Dockerfile").is_file()
    assert (staged / "model_store" / "plan.py").is_file()
    assert not (staged / ".venv").exists() and not (staged / "node_modules").exists()
