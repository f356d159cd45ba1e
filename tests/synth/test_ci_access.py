"""CI of one named repository's stage environment may publish the fleet's adapters and update
that stage's registry, and nothing else."""

from __future__ import annotations

import json

import pytest

from llmfleet.model_store.store.store import StoreLocation
from llmfleet.stacks.ci_access import CiAccessProps
from llmfleet.stacks.config import StackConfigError
from llmfleet.stacks.fleet import CI_ROLE_ARN_OUTPUT
from tests.conftest import REPO
from tests.synth.conftest import GITHUB_REPO, Synthesized, as_list, only


def store_object(key: str) -> dict:
    return {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, f":s3:::llmfleet-store/{key}"]]}


def test_only_the_named_repository_can_assume_the_role(secure_fleet: Synthesized) -> None:
    assert secure_fleet.fleet.ci is not None
    synthesized = secure_fleet.template(secure_fleet.fleet.ci)
    provider = only(synthesized.find_resources("AWS::IAM::OIDCProvider"))
    assert provider["Url"] == "https://token.actions.githubusercontent.com"
    role = only(synthesized.find_resources("AWS::IAM::Role"))
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Action"] == "sts:AssumeRoleWithWebIdentity"
    stage = secure_fleet.fleet.plans[0].stage
    assert trust["Condition"] == {
        "StringEquals": {
            "token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
            "token.actions.githubusercontent.com:sub": f"repo:{GITHUB_REPO}:environment:{stage}",
        },
    }
    assert role["MaxSessionDuration"] == 3600


def test_role_writes_adapters_and_registry_and_reads_no_weights(secure_fleet: Synthesized) -> None:
    synthesized = secure_fleet.template(secure_fleet.fleet.ci)
    (policy,) = synthesized.find_resources("AWS::IAM::Policy").values()
    statements = {s["Sid"]: s for s in policy["Properties"]["PolicyDocument"]["Statement"]}
    assert set(statements) == {"PublishAdapters", "ReadBaseModelMetadata", "UpdateRegistry", "FindStoreKeys", "StoreKey"}
    models = sorted(plan.model_name for plan in secure_fleet.fleet.plans)
    stage = secure_fleet.fleet.plans[0].stage
    assert statements["PublishAdapters"]["Resource"] == [store_object(f"adapters/{m}/*") for m in models]
    assert sorted(as_list(statements["PublishAdapters"]["Action"])) == [
        "s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"
    ]
    assert statements["UpdateRegistry"]["Resource"] == [store_object(f"registry/{m}/{stage}.json") for m in models]
    assert sorted(as_list(statements["UpdateRegistry"]["Action"])) == ["s3:GetObject", "s3:PutObject"]
    assert as_list(statements["ReadBaseModelMetadata"]["Action"]) == ["s3:GetObject"]
    assert sorted(json.dumps(r) for r in statements["ReadBaseModelMetadata"]["Resource"]) == sorted(
        json.dumps(store_object(f"models/{m}/*/{k}")) for m in models for k in ("config.json", "_manifest.json")
    )
    # On the bucket, unconditioned: an s3:prefix condition would not turn a missing key's 403 into 404.
    listing = statements["FindStoreKeys"]
    assert as_list(listing["Action"]) == ["s3:ListBucket"] and "Condition" not in listing
    assert listing["Resource"] == {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":s3:::llmfleet-store"]]}
    key = statements["StoreKey"]
    assert sorted(as_list(key["Action"])) == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert "Fn::ImportValue" in key["Resource"]  # the base stack's store key, nothing else
    assert key["Condition"] == {"StringLike": {"kms:ViaService": "s3.*"}}
    for statement in statements.values():
        actions = as_list(statement["Action"])
        assert not any(a.endswith(":*") or a == "*" for a in actions)
        assert statement["Resource"] != "*"
        assert not any(a.startswith(("s3:Delete", "iam:", "cloudformation:", "ecs:", "sagemaker:")) for a in actions)
    # Only PutObject writes, and only the fleet's models' adapters and this stage's registry documents.
    writes = [r for s in statements.values() if "s3:PutObject" in as_list(s["Action"]) for r in as_list(s["Resource"])]
    assert sorted(json.dumps(r) for r in writes) == sorted(
        json.dumps(store_object(k)) for m in models for k in (f"adapters/{m}/*", f"registry/{m}/{stage}.json")
    )


def test_role_arn_is_a_stack_output_for_the_workflow(secure_fleet: Synthesized) -> None:
    synthesized = secure_fleet.template(secure_fleet.fleet.ci)
    (role_id,) = synthesized.find_resources("AWS::IAM::Role")
    output = synthesized.find_outputs(CI_ROLE_ARN_OUTPUT)[CI_ROLE_ARN_OUTPUT]
    assert output["Value"] == {"Fn::GetAtt": [role_id, "Arn"]}
    assert "LLMFLEET_CI_ROLE_ARN" in output["Description"]
    workflow = (REPO / "examples" / "ci" / "publish-adapter.yml").read_text()
    assert "role-to-assume: ${{ vars.LLMFLEET_CI_ROLE_ARN }}" in workflow
    assert f"`{CI_ROLE_ARN_OUTPUT}`" in (REPO / "docs" / "stacks.md").read_text()


def test_props_refuse_a_repository_that_is_not_owner_slash_name() -> None:
    with pytest.raises(StackConfigError, match="CiAccessProps.github_repo: must be a GitHub 'owner/name', but 'acme' was given"):
        CiAccessProps(github_repo="acme", store=StoreLocation("b"), key=None, models=("m",), stage="prod")  # type: ignore[arg-type]
