"""`llmfleet gateway keys` against moto's Secrets Manager over HTTP: a key is printed once, only its
sha256 is stored, rotation revokes the others, and bad input names what is allowed."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from typer.testing import CliRunner

from llmfleet.model_store.gateway.contract import gateway_keys_secret_name
from llmfleet.model_store.gateway.policy import key_hash, KEY_PREFIX
from llmfleet.model_store.contract.manifest import load_fleet
from llmfleet.scripts.cli import app

runner = CliRunner()
FLEET = """
name: {name}
models:
  - name: m
    source: s3://llmfleet-store/models/m
    architecture: Qwen/Qwen3-0.6B
gateway:
  enabled: true
  consumers: consumers.yaml
"""


@pytest.fixture
def fleet(tmp_path: Path, aws_env: str, request) -> Path:
    """A fleet of its own per test (its own secret on the session's moto server)."""
    (tmp_path / "fleet.yaml").write_text(FLEET.format(name=f"keys-{request.node.name[5:20].replace('_', '-').strip('-')}"))
    (tmp_path / "consumers.yaml").write_text("consumers:\n  - {name: search, models: [m]}\n  - {name: ops, models: ['*']}\n")
    return tmp_path / "fleet.yaml"


def secret_name(fleet: Path) -> str:
    return gateway_keys_secret_name(load_fleet(fleet).name, "prod")


def secret(fleet: Path) -> dict:
    return json.loads(boto3.client("secretsmanager").get_secret_value(SecretId=secret_name(fleet))["SecretString"])


def create_secret(fleet: Path, kms_key_id: str | None = None) -> None:
    """What the gateway stack (with the gateway's KMS key) or `llmfleet local up` makes."""
    extra = {"KmsKeyId": kms_key_id} if kms_key_id else {}
    boto3.client("secretsmanager").create_secret(Name=secret_name(fleet), SecretString="{}", **extra)


def test_create_prints_the_key_once_and_stores_its_hash(fleet: Path) -> None:
    kms_key = boto3.client("kms").create_key(Description="the gateway's key")["KeyMetadata"]["Arn"]
    create_secret(fleet, kms_key)
    first = runner.invoke(app, ["gateway", "keys", "create", "--consumer", "search", "-f", str(fleet)])
    assert first.exit_code == 0, first.output
    key = first.stdout.strip().splitlines()[-1]
    assert key.startswith(KEY_PREFIX)
    stored = secret(fleet)
    assert stored == {"search": [key_hash(key)]} and key not in json.dumps(stored)
    second = runner.invoke(app, ["--json", "gateway", "keys", "create", "-c", "search", "-f", str(fleet)])
    assert secret(fleet)["search"] == [key_hash(key), key_hash(json.loads(second.stdout)["key"])]
    listing = runner.invoke(app, ["gateway", "keys", "list", "-f", str(fleet), "--json"])
    assert json.loads(listing.stdout) == [
        {"consumer": "search", "keys": 2, "key_ids": [h[:8] for h in secret(fleet)["search"]]},
        {"consumer": "ops", "keys": 0, "key_ids": []},
    ]
    assert key not in listing.stdout
    # New versions of the stack's secret: its KMS key kept, no second secret made.
    described = boto3.client("secretsmanager").describe_secret(SecretId=secret_name(fleet))
    assert described["KmsKeyId"] == kms_key and len(described["VersionIdsToStages"]) >= 2


def test_rotate_replaces_every_key_of_the_consumer_only(fleet: Path) -> None:
    create_secret(fleet)
    runner.invoke(app, ["gateway", "keys", "create", "-c", "search", "-f", str(fleet)])
    runner.invoke(app, ["gateway", "keys", "create", "-c", "ops", "-f", str(fleet)])
    before = secret(fleet)
    rotated = runner.invoke(app, ["--json", "gateway", "keys", "rotate", "-c", "search", "-f", str(fleet)])
    assert rotated.exit_code == 0, rotated.output
    after = secret(fleet)
    assert after["search"] == [key_hash(json.loads(rotated.stdout)["key"])] != before["search"]
    assert after["ops"] == before["ops"]


def test_a_missing_secret_is_made_by_create_and_named_by_list(fleet: Path) -> None:
    missing = runner.invoke(app, ["gateway", "keys", "list", "-f", str(fleet)])
    assert missing.exit_code == 1 and "does not exist: deploy the fleet's gateway stack" in missing.output
    created = runner.invoke(app, ["--json", "gateway", "keys", "rotate", "-c", "ops", "-f", str(fleet)])
    assert created.exit_code == 0, created.output
    assert secret(fleet) == {"ops": [key_hash(json.loads(created.stdout)["key"])]}


def test_unknown_consumer_is_named(fleet: Path) -> None:
    create_secret(fleet)
    unknown = runner.invoke(app, ["gateway", "keys", "create", "-c", "nobody", "-f", str(fleet)])
    assert unknown.exit_code == 2
    assert "--consumer 'nobody' is not in the consumers file; its consumers are ['search', 'ops']" in unknown.output
