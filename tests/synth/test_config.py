"""Context and manifest inputs of the CDK app are checked before any construct is made."""

from __future__ import annotations

import aws_cdk as cdk
import pytest

from model_store.store import StoreLocation
from stacks.config import FleetSettings, StackConfigError, plan_manifest, source_prefix, store_of, store_uri
from tests.conftest import REPO


def settings(**context: str) -> FleetSettings:
    return FleetSettings.from_context(cdk.App(context=context).node)


def test_context_defaults_and_overrides() -> None:
    assert settings().fleet_path.name == "fleet.yaml"
    assert settings().certificate_arn is None and settings().allowed_cidr == "0.0.0.0/0"
    assert settings(github_repo="acme/x", stage="staging").github_repo == "acme/x"


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"github_repo": "acme"}, "context 'github_repo': 'acme' is not 'owner/name'"),
        ({"certificate_arn": "my-cert"}, "context 'certificate_arn': 'my-cert' is not an ACM certificate ARN"),
        ({"allowed_cidr": "10.0.0.0/33"}, "context 'allowed_cidr': '10.0.0.0/33' is not an IPv4 CIDR"),
    ],
)
def test_bad_context_is_refused_with_the_key_and_value(context: dict, message: str) -> None:
    with pytest.raises(StackConfigError, match=message):
        settings(**context)


def test_stage_from_context_overrides_the_manifest_and_is_validated() -> None:
    fleet, plans = plan_manifest(REPO / "fleet.yaml", "staging")
    assert fleet.stage == "staging" and {p.stage for p in plans} == {"staging"}
    with pytest.raises(StackConfigError, match=r"context 'stage': 'Bad Stage!' must match \^\[a-z\]"):
        plan_manifest(REPO / "fleet.yaml", "Bad Stage!")


def test_the_store_is_every_source_up_to_models_and_must_be_shared() -> None:
    _, plans = plan_manifest(REPO / "fleet.yaml")
    assert store_of(plans) == StoreLocation("llmfleet-store")
    assert store_uri(store_of(plans)) == "s3://llmfleet-store"
    in_team = [p.model_copy(update={"source": f"s3://b/team/models/{p.model_name}"}) for p in plans]
    assert store_of(in_team) == StoreLocation("b", "team")
    assert store_uri(store_of(in_team)) == "s3://b/team"
    moved = plans[0].model_copy(update={"source": "s3://elsewhere/models/x"})
    with pytest.raises(StackConfigError, match=r"one store.*\['s3://elsewhere', 's3://llmfleet-store'\]"):
        store_of([moved, *plans[1:]])
    with pytest.raises(StackConfigError, match="has no key prefix"):
        source_prefix(plans[0].model_copy(update={"source": "s3://llmfleet-store"}))
