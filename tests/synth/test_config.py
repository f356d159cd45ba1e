"""Context and manifest inputs of the CDK app are checked before any construct is made."""

from __future__ import annotations

import aws_cdk as cdk
import pytest

from llmfleet.model_store.store.store import StoreLocation
from llmfleet.model_store.planning.fleet import load_and_plan
from llmfleet.stacks.config import FleetSettings, StackConfigError, store_of
from tests.conftest import REPO


def settings(**context: str) -> FleetSettings:
    return FleetSettings.from_context(cdk.App(context=context).node)


def test_context_defaults_and_overrides() -> None:
    assert settings().fleet_path.name == "fleet.yaml"
    assert settings().certificate_arn is None and settings().allowed_cidr == "0.0.0.0/0"
    assert settings(github_repo="acme/x", stage="staging").github_repo == "acme/x"
    assert settings().waf and settings().waf_block
    assert not settings(waf="off").waf and not settings(waf_mode="count").waf_block
    assert settings().deletion_protection and not settings(deletion_protection="off").deletion_protection
    pinned = "python:3.11-slim@sha256:" + "a" * 64
    assert settings().gateway_base_image is None and settings(gateway_base_image=pinned).gateway_base_image == pinned


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"github_repo": "acme"}, "context 'github_repo': 'acme' is not 'owner/name'"),
        ({"certificate_arn": "my-cert"}, "context 'certificate_arn': 'my-cert' is not an ACM certificate ARN"),
        ({"allowed_cidr": "10.0.0.0/33"}, "context 'allowed_cidr': '10.0.0.0/33' is not an IPv4 CIDR"),
        ({"waf": "no"}, "context 'waf': 'no'; use 'on'"),
        ({"waf_mode": "log"}, "context 'waf_mode': 'log'; use 'block'"),
        ({"deletion_protection": "no"}, "context 'deletion_protection': 'no'; use 'on'"),
        (
            {"gateway_base_image": "python:3.11-slim"},
            "context 'gateway_base_image': 'python:3.11-slim' is not pinned by digest",
        ),
    ],
)
def test_bad_context_is_refused_with_the_key_and_value(context: dict, message: str) -> None:
    with pytest.raises(StackConfigError, match=message):
        settings(**context)


def test_the_store_is_shared_by_every_source() -> None:
    _, plans = load_and_plan(REPO / "fleet.yaml")
    assert store_of(plans) == StoreLocation("llmfleet-store")
    assert store_of(plans).uri == "s3://llmfleet-store"
    in_team = [p.model_copy(update={"store_uri": "s3://b/team"}) for p in plans]
    assert store_of(in_team) == StoreLocation("b", "team")
    assert store_of(in_team).uri == "s3://b/team"
    moved = plans[0].model_copy(update={"store_uri": "s3://elsewhere"})
    with pytest.raises(StackConfigError, match=r"one store.*\['s3://elsewhere', 's3://llmfleet-store'\]"):
        store_of([moved, *plans[1:]])
    local = plans[0].model_copy(update={"store_uri": None})
    with pytest.raises(StackConfigError, match="upload local sources"):
        store_of([local])
