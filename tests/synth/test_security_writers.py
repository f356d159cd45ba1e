"""Writers are scoped, read from the synthesized templates as an attacker would read them: the CI
role trusts one exact OIDC subject and writes only the fleet's models' adapters and its stage's
registry documents; no principal can replace a published version's manifest; a server writes
only its own stage's and target's compile cache.

Policies are evaluated with moto's IAM evaluator after the template's partition is resolved;
it treats conditions other than StringEquals as met, so the write-once Deny's condition is
checked as written (moto mishandles S3 conditional-write conditions, SECURITY.md).
"""

from __future__ import annotations

import json

import aws_cdk as cdk
import pytest
from aws_cdk import aws_kms as kms
from aws_cdk.assertions import Template
from moto.iam.access_control import IAMPolicy, PermissionResult

from llmfleet.model_store.store.access import POLICY_VERSION
from llmfleet.model_store.store.store import StoreLocation
from llmfleet.stacks.ci_access import CiAccessConstruct, CiAccessProps
from llmfleet.stacks.config import FleetSettings, StackConfigError
from tests.synth.conftest import GITHUB_REPO, Synthesized, as_list, only

BUCKET = "llmfleet-store"
BUCKET_ARN = f"arn:aws:s3:::{BUCKET}"
SUB = "token.actions.githubusercontent.com:sub"
OTHER_MODEL = "not-in-the-fleet"


def resolved(value):
    """A template value with `arn:${AWS::Partition}` joins resolved to plain strings (partition aws)."""
    if isinstance(value, dict) and set(value) == {"Fn::Join"}:
        separator, parts = value["Fn::Join"]
        return separator.join(resolved(p) for p in parts)
    if value == {"Ref": "AWS::Partition"}:
        return "aws"
    if isinstance(value, list):
        return [resolved(v) for v in value]
    return value


def s3_policy(statements: list[dict]) -> IAMPolicy:
    """The S3 statements among `statements`, resolved, as one policy for moto's evaluator."""
    s3 = [
        {**s, "Resource": resolved(as_list(s["Resource"]))}
        for s in statements
        if any(a.startswith("s3:") for a in as_list(s["Action"]))
    ]
    return IAMPolicy(json.dumps({"Version": POLICY_VERSION, "Statement": s3}))


def role_statements(template: Template, role_id: str) -> list[dict]:
    policies = template.find_resources("AWS::IAM::Policy", {"Properties": {"Roles": [{"Ref": role_id}]}})
    return [s for p in policies.values() for s in p["Properties"]["PolicyDocument"]["Statement"]]


def result(policy: IAMPolicy, action: str, key: str) -> PermissionResult:
    return policy.is_action_permitted(action, f"{BUCKET_ARN}/{key}")


# --- the CI role ------------------------------------------------------------------------------


def test_the_ci_role_trusts_exactly_the_stages_environment(secure_fleet: Synthesized) -> None:
    template = secure_fleet.template(secure_fleet.fleet.ci)
    (trust,) = only(template.find_resources("AWS::IAM::Role"))["AssumeRolePolicyDocument"]["Statement"]
    stage = secure_fleet.fleet.plans[0].stage
    assert set(trust["Condition"]) == {"StringEquals"}  # no StringLike: nothing is a pattern
    assert trust["Condition"]["StringEquals"][SUB] == f"repo:{GITHUB_REPO}:environment:{stage}"
    assert "*" not in trust["Condition"]["StringEquals"][SUB] and "?" not in trust["Condition"]["StringEquals"][SUB]


def test_the_ci_role_writes_only_the_fleets_adapters_and_its_stages_registry(secure_fleet: Synthesized) -> None:
    template = secure_fleet.template(secure_fleet.fleet.ci)
    (role_id,) = template.find_resources("AWS::IAM::Role")
    policy = s3_policy(role_statements(template, role_id))
    models = [plan.model_name for plan in secure_fleet.fleet.plans]
    stage = secure_fleet.fleet.plans[0].stage
    for model in models:
        assert result(policy, "s3:PutObject", f"adapters/{model}/medical/v1/_manifest.json") == PermissionResult.PERMITTED
        assert result(policy, "s3:PutObject", f"registry/{model}/{stage}.json") == PermissionResult.PERMITTED
        for key in (f"registry/{model}/staging.json", f"registry/{model}/{stage}", f"models/{model}/main/config.json"):
            assert result(policy, "s3:PutObject", key) != PermissionResult.PERMITTED, key
    for key in (f"adapters/{OTHER_MODEL}/medical/v1/_manifest.json", f"registry/{OTHER_MODEL}/{stage}.json"):
        assert result(policy, "s3:PutObject", key) != PermissionResult.PERMITTED, key
    written = [r for s in role_statements(template, role_id) if "s3:PutObject" in as_list(s["Action"]) for r in as_list(s["Resource"])]
    assert not any(resolved(r).endswith(("/adapters/*", "/registry/*")) for r in written), written


def ci_trust(**props) -> dict:
    """The trust condition of a CI role made alone (no fleet), from CiAccessProps."""
    stack = cdk.Stack(cdk.App(), "Ci")
    key = kms.Key(stack, "Key")
    props = CiAccessProps(github_repo=GITHUB_REPO, store=StoreLocation(BUCKET), key=key, models=("m",), stage="prod", **props)
    CiAccessConstruct(stack, "Ci", props)
    (trust,) = only(Template.from_stack(stack).find_resources("AWS::IAM::Role"))["AssumeRolePolicyDocument"]["Statement"]
    return trust["Condition"]


@pytest.mark.parametrize(
    ("props", "subject"),
    [
        ({}, f"repo:{GITHUB_REPO}:environment:prod"),
        ({"github_environment": "release"}, f"repo:{GITHUB_REPO}:environment:release"),
        ({"github_ref": "refs/heads/main"}, f"repo:{GITHUB_REPO}:ref:refs/heads/main"),
    ],
)
def test_the_environment_defaults_to_the_stage_and_a_ref_may_replace_it(props: dict, subject: str) -> None:
    assert ci_trust(**props) == {"StringEquals": {"token.actions.githubusercontent.com:aud": "sts.amazonaws.com", SUB: subject}}


def test_context_names_the_environment_or_the_ref_never_both() -> None:
    def settings(**context: str) -> FleetSettings:
        return FleetSettings.from_context(cdk.App(context=context).node)

    assert settings(github_ref="refs/heads/main").github_ref == "refs/heads/main"
    assert settings(github_environment="release").github_environment == "release"
    with pytest.raises(StackConfigError, match="'github_environment' 'release' and 'github_ref' 'refs/heads/main'"):
        settings(github_environment="release", github_ref="refs/heads/main")
    with pytest.raises(StackConfigError, match=r"CiAccessProps.github_ref: must be .* no wildcard, but 'refs/heads/\*' was given"):
        ci_trust(github_ref="refs/heads/*")
    with pytest.raises(StackConfigError, match=r"CiAccessProps.github_environment: .* but 'pr-\*' was given"):
        ci_trust(github_environment="pr-*")
    with pytest.raises(StackConfigError, match=r"CiAccessProps.github_environment, github_ref: name exactly one"):
        ci_trust(github_environment="release", github_ref="refs/heads/main")


# --- versions are write-once ------------------------------------------------------------------


def test_no_principal_can_replace_a_published_manifest(secure_fleet: Synthesized) -> None:
    base = secure_fleet.template(secure_fleet.fleet.base)
    (store_bucket_id,) = base.find_resources("AWS::S3::Bucket", {"Properties": {"BucketName": BUCKET}})
    (policy,) = base.find_resources("AWS::S3::BucketPolicy", {"Properties": {"Bucket": {"Ref": store_bucket_id}}}).values()
    (write_once,) = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s.get("Sid") == "PublishedVersionsAreWriteOnce"]
    assert write_once["Effect"] == "Deny" and write_once["Principal"] == {"AWS": "*"}
    assert as_list(write_once["Action"]) == ["s3:PutObject"]
    # Denied while the request carries no If-None-Match: S3 then refuses to write over an existing key.
    assert write_once["Condition"] == {"Null": {"s3:if-none-match": "true"}}
    deny = IAMPolicy(json.dumps({"Version": POLICY_VERSION, "Statement": [{**write_once, "Resource": resolved(write_once["Resource"])}]}))
    for key in (
        "models/qwen3-small/main/_manifest.json",
        "adapters/qwen3-small/medical/v1/_manifest.json",
        "compile-cache/qwen3-small/prod/ecs/k1/v1/_manifest.json",
    ):
        assert result(deny, "s3:PutObject", key) == PermissionResult.DENIED, key
    for key in ("registry/qwen3-small/prod.json", "adapters/qwen3-small/medical/v1/adapter_model.safetensors"):
        assert result(deny, "s3:PutObject", key) != PermissionResult.DENIED, key


# --- the serving roles ------------------------------------------------------------------------


def serving_roles(secure_fleet: Synthesized) -> list[tuple[str, str, str, Template]]:
    """(model, target, role id, template) of every ECS task role and SageMaker execution role."""
    found = []
    for plan in secure_fleet.fleet.plans:
        template = secure_fleet.model_template(plan.model_name)
        for task in template.find_resources("AWS::ECS::TaskDefinition").values():
            found.append((plan.model_name, "ecs", task["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0], template))
        for model in template.find_resources("AWS::SageMaker::Model").values():
            found.append((plan.model_name, "sagemaker", model["Properties"]["ExecutionRoleArn"]["Fn::GetAtt"][0], template))
    assert {target for _, target, _, _ in found} == {"ecs", "sagemaker"}
    return found


def test_a_server_writes_only_its_own_stage_and_target_compile_cache(secure_fleet: Synthesized) -> None:
    stage = secure_fleet.fleet.plans[0].stage
    for model, target, role_id, template in serving_roles(secure_fleet):
        policy = s3_policy(role_statements(template, role_id))
        own = f"compile-cache/{model}/{stage}/{target}/k1/v1"
        assert result(policy, "s3:PutObject", f"{own}/vllm/model.pt") == PermissionResult.PERMITTED
        assert result(policy, "s3:GetObject", f"{own}/_manifest.json") == PermissionResult.PERMITTED
        other_target = "sagemaker" if target == "ecs" else "ecs"
        for foreign in (
            f"compile-cache/{model}/{stage}/{other_target}/k1/v1",
            f"compile-cache/{model}/staging/{target}/k1/v1",
            f"compile-cache/{OTHER_MODEL}/{stage}/{target}/k1/v1",
        ):
            for action in ("s3:PutObject", "s3:GetObject"):
                assert result(policy, action, f"{foreign}/vllm/model.pt") != PermissionResult.PERMITTED, (model, target, action, foreign)
        for key in (f"models/{model}/main/config.json", f"adapters/{model}/a/v1/_manifest.json", f"registry/{model}/{stage}.json"):
            assert result(policy, "s3:PutObject", key) != PermissionResult.PERMITTED, (model, target, key)
