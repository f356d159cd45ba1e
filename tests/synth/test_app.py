"""`npx cdk synth` of the example fleet on a clean checkout: no credentials, no lookups, all stacks."""

from __future__ import annotations

import json

from llmfleet.model_store.gateway.contract import GATEWAY_BASE_IMAGE_ARG, GATEWAY_DOCKERFILE
from llmfleet.model_store.contract.manifest import load_fleet
from tests.conftest import REPO
from tests.synth.conftest import CliSynth


def test_cli_synth_succeeds_without_credentials_or_lookups(cli_synth: CliSynth) -> None:
    assert cli_synth.returncode == 0, cli_synth.output[-4000:]
    fleet = load_fleet(REPO / "fleet.yaml")
    prefix = f"llmfleet-{fleet.name}-{fleet.stage}"
    stacks = ["", "-gateway", *(f"-{m.name}" for m in fleet.models)]
    expected = {f"{prefix}{stack}.template.json" for stack in stacks}
    assert fleet.gateway.enabled
    assert {t.name for t in cli_synth.templates()} == expected  # no CI stack without -c github_repo
    manifest = json.loads((cli_synth.outdir / "manifest.json").read_text())
    assert "missing" not in manifest, manifest.get("missing")  # nothing asked of an AWS account
    for artifact in manifest["artifacts"].values():
        if artifact["type"] == "aws:cloudformation:stack":
            assert artifact["environment"] == f"aws://unknown-account/{fleet.region}"


def test_cli_synth_warns_loudly_about_plain_http_and_the_placeholder_base_images_and_nothing_else(
    cli_synth: CliSynth,
) -> None:
    fleet = load_fleet(REPO / "fleet.yaml")
    warnings = [line for line in cli_synth.output.splitlines() if line.startswith("WARNING")]
    # The gateway's load balancer is the one clients reach; the models' are internal (HTTP inside the VPC, no warning).
    http = [line for line in warnings if "listens on plain HTTP" in line]
    assert (
        len(http) == 1
        and f"the gateway of {fleet.name} ({fleet.stage}): the load balancer listens on plain HTTP" in http[0]
    )
    # cdk.json's vllm_image and gateway_base_image are placeholder digests: synthesis works, a deploy
    # needs the real ones.
    placeholder = [line for line in warnings if "is a placeholder digest" in line]
    assert [("-c vllm_image=" in line, "-c gateway_base_image=" in line) for line in placeholder] == [
        (True, False),
        (False, True),
    ]
    assert len(warnings) == len(http) + 2, warnings


def test_cli_synth_stages_the_serving_image_from_the_repository_root(cli_synth: CliSynth) -> None:
    fleet = load_fleet(REPO / "fleet.yaml")
    assets = json.loads((cli_synth.outdir / f"llmfleet-{fleet.name}-{fleet.stage}.assets.json").read_text())
    (image,) = assets["dockerImages"].values()
    assert image["source"]["dockerFile"] == "containers/vllm/Dockerfile"
    staged = cli_synth.outdir / image["source"]["directory"]
    assert (staged / "containers" / "vllm" / "Dockerfile").is_file()
    assert (staged / "model_store" / "contract" / "plan.py").is_file()
    assert not (staged / ".venv").exists() and not (staged / "node_modules").exists()


def test_cli_synth_stages_the_gateway_image_with_only_what_its_dockerfile_copies(cli_synth: CliSynth) -> None:
    fleet = load_fleet(REPO / "fleet.yaml")
    assets = json.loads((cli_synth.outdir / f"llmfleet-{fleet.name}-{fleet.stage}-gateway.assets.json").read_text())
    (image,) = assets["dockerImages"].values()
    assert image["source"]["dockerFile"] == GATEWAY_DOCKERFILE
    assert image["source"]["dockerBuildArgs"] == {
        GATEWAY_BASE_IMAGE_ARG: json.loads((REPO / "cdk.json").read_text())["context"]["gateway_base_image"]
    }
    staged = cli_synth.outdir / image["source"]["directory"]
    assert sorted(p.name for p in staged.iterdir()) == ["containers", "model_store", "requirements"]
    assert sorted(p.name for p in (staged / "containers").iterdir()) == ["__init__.py", "gateway"]
    assert [p.name for p in (staged / "requirements").iterdir()] == ["gateway-lock.txt"]
    assert (staged / GATEWAY_DOCKERFILE).is_file() and (staged / "model_store" / "gateway" / "contract.py").is_file()
