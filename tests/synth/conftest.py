"""Synthesized fleets shared by every synth test: each is built once per session (seconds per stack).

- `secure_fleet`: the example fleet.yaml (its gateway on) with a certificate (HTTPS) and a CI repository,
  synthesized in-process with cdk-nag attached (a finding fails synthesis, so reaching the fixture proves none).
- `public_fleet`: the same with the manifest's gateway section left out: each ECS model behind its own
  public load balancer and WAF, as fleets without the gateway are deployed.
- `cli_synth`: the same manifest through the real CDK CLI (`npx cdk synth`) with cdk.json defaults
  (no certificate: plain HTTP with a warning) and no AWS credentials in the environment.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aws_cdk as cdk
import pytest
import yaml
from aws_cdk.assertions import Template

from llmfleet.stacks.fleet import Fleet, compose_fleet
from tests.conftest import REPO

CERTIFICATE_ARN = "arn:aws:acm:us-east-1:123456789012:certificate/0d1c5f4e-0000-4000-8000-000000000000"
GITHUB_REPO = "acme/llm-adapters"
CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)


def cdk_json_context(**overrides: str) -> dict:
    """cdk.json's context (feature flags, defaults) plus overrides, as `cdk synth -c` would see it."""
    context = json.loads((REPO / "cdk.json").read_text())["context"]
    return {**context, "fleet": str(REPO / "fleet.yaml"), **overrides}


@dataclass(frozen=True)
class Synthesized:
    fleet: Fleet
    outdir: Path

    def template(self, stack: cdk.Stack) -> Template:
        return Template.from_json(self.template_json(stack.artifact_id))

    def template_json(self, artifact_id: str) -> dict:
        return json.loads((self.outdir / f"{artifact_id}.template.json").read_text())

    def model_template(self, model: str) -> Template:
        return self.template(self.fleet.models[model])

    def gateway_template(self) -> Template:
        assert self.fleet.gateway is not None, "this fleet has no gateway"
        return self.template(self.fleet.gateway)


@pytest.fixture(scope="session")
def secure_fleet(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    outdir = tmp_path_factory.mktemp("secure-fleet")
    app = cdk.App(
        context=cdk_json_context(certificate_arn=CERTIFICATE_ARN, github_repo=GITHUB_REPO), outdir=str(outdir)
    )
    fleet = compose_fleet(app)
    app.synth()
    return Synthesized(fleet=fleet, outdir=outdir)


def fleet_without_gateway(directory: Path) -> Path:
    """The example fleet (and its lock) in `directory`, its `gateway:` section left out."""
    manifest = yaml.safe_load((REPO / "fleet.yaml").read_text())
    assert manifest.pop("gateway")["enabled"] is True
    (directory / "fleet.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    (directory / "fleet.lock.json").write_text((REPO / "fleet.lock.json").read_text())
    return directory / "fleet.yaml"


@pytest.fixture(scope="session")
def public_fleet(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    outdir = tmp_path_factory.mktemp("public-fleet")
    fleet_path = fleet_without_gateway(tmp_path_factory.mktemp("public-manifest"))
    context = cdk_json_context(certificate_arn=CERTIFICATE_ARN, github_repo=GITHUB_REPO, fleet=str(fleet_path))
    app = cdk.App(context=context, outdir=str(outdir))
    fleet = compose_fleet(app)
    app.synth()
    return Synthesized(fleet=fleet, outdir=outdir)


@dataclass(frozen=True)
class CliSynth:
    outdir: Path
    returncode: int
    output: str

    def templates(self) -> list[Path]:
        return sorted(self.outdir.glob("*.template.json"))


@pytest.fixture(scope="session")
def cli_synth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliSynth]:
    """`npx cdk synth` from the repository root, as on a fresh clone with no AWS credentials."""
    outdir = tmp_path_factory.mktemp("cli-synth")
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_VARIABLES}
    # Point the SDK at files that do not exist, so no ~/.aws profile can lend credentials either.
    env["AWS_SHARED_CREDENTIALS_FILE"] = env["AWS_CONFIG_FILE"] = str(outdir / "no-such-aws-file")
    env["JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION"] = "1"
    result = subprocess.run(
        ["npx", "--no-install", "cdk", "synth", "--output", str(outdir), "--quiet", "--no-notices"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    yield CliSynth(outdir=outdir, returncode=result.returncode, output=result.stdout + result.stderr)


def only(resources: dict) -> dict:
    """The Properties of the single resource `Template.find_resources` matched."""
    assert len(resources) == 1, f"expected one resource, got {list(resources)}"
    return next(iter(resources.values()))["Properties"]


def as_list(value) -> list:
    """IAM's Action/Resource: a string or a list of them."""
    return value if isinstance(value, list) else [value]


def s3_grants(template: Template, role_id: str) -> dict[str, list[str]]:
    """S3 action -> the resources a role's policies grant it on (as JSON), sorted."""
    policies = template.find_resources("AWS::IAM::Policy", {"Properties": {"Roles": [{"Ref": role_id}]}})
    grants: dict[str, list[str]] = {}
    for policy in policies.values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            for action in as_list(statement["Action"]):
                if action.startswith("s3:"):
                    grants.setdefault(action, []).extend(json.dumps(r) for r in as_list(statement["Resource"]))
    return {action: sorted(resources) for action, resources in grants.items()}


def store_objects(*prefixes: str, bucket: str = "llmfleet-store") -> list[str]:
    """The JSON of `arn:<partition>:s3:::<bucket>/<prefix>/*` for each prefix, sorted."""
    return sorted(
        json.dumps({"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, f":s3:::{bucket}/{p}/*"]]}) for p in prefixes
    )


def assert_serving_role_grants(
    template: Template,
    role_id: str,
    model: str,
    stage: str,
    target: str,
    *,
    bucket: str = "llmfleet-store",
    prefix: str = "",
) -> None:
    """A server reads only its own model's store prefixes and its own stage's and target's compile
    cache, and writes only that compile cache; listing is unconditioned on the bucket (a registry
    document that does not exist yet must be a 404, not a 403)."""
    grants = s3_grants(template, role_id)
    at = f"{prefix}/" if prefix else ""
    cache = f"{at}compile-cache/{model}/{stage}/{target}"
    reads = [f"{at}{folder}/{model}" for folder in ("models", "adapters", "registry")]
    assert set(grants) == {"s3:GetObject", "s3:ListBucket", "s3:PutObject"}
    assert grants["s3:GetObject"] == store_objects(*reads, cache, bucket=bucket)
    assert grants["s3:PutObject"] == store_objects(cache, bucket=bucket)
    bucket_arn = {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, f":s3:::{bucket}"]]}
    assert grants["s3:ListBucket"] == [json.dumps(bucket_arn)]
