"""Writers are scoped to what they write (model_store.store.access): a stage's CI role writes only the
fleet's models' adapters and that stage's registry documents, its trust names one exact OIDC
subject, a server writes only its own stage's and target's compile cache, and no principal can
replace a published version's manifest.

IAM matching (ARN wildcards, Allow/Deny) is moto's policy evaluator. It evaluates only
StringEquals conditions and treats any other condition as met, so for the write-once Deny it
answers "does the Deny apply to a write without If-None-Match"; the condition itself is checked
as written here and on the synthesized template (tests/synth/test_security_writers.py).
"""

from __future__ import annotations

import json

import pytest
from moto.iam.access_control import IAMPolicy, PermissionResult

from llmfleet.model_store.store.access import (
    AccessError,
    ci_publisher_statements,
    github_subject,
    POLICY_VERSION,
    serving_scope,
    write_once_statement,
)
from llmfleet.model_store.store.store import ModelStore, StoreLocation

BUCKET = "llmfleet-store"
BUCKET_ARN = f"arn:aws:s3:::{BUCKET}"
KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
MODELS = ("qwen3-small", "r1-distill-14b")
OTHER_MODEL = "llama-70b"


def ci_policy(stage: str = "prod", prefix: str = "") -> IAMPolicy:
    statements = ci_publisher_statements(BUCKET, prefix, KEY_ARN, "aws", models=MODELS, stage=stage)
    return IAMPolicy(json.dumps({"Version": POLICY_VERSION, "Statement": statements}))


def permits(policy: IAMPolicy, action: str, key: str) -> bool:
    return policy.is_action_permitted(action, f"{BUCKET_ARN}/{key}") == PermissionResult.PERMITTED


# --- the CI role's writes ---------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_ci_writes_the_fleets_models_adapters_and_this_stages_registry(model: str) -> None:
    policy = ci_policy("prod")
    assert permits(policy, "s3:PutObject", f"adapters/{model}/medical/v3/adapter_model.safetensors")
    assert permits(policy, "s3:PutObject", f"adapters/{model}/medical/v3/_manifest.json")
    assert permits(policy, "s3:PutObject", f"registry/{model}/prod.json")
    assert permits(policy, "s3:GetObject", f"models/{model}/main/config.json")


def test_ci_writes_nothing_of_another_model_or_another_stage() -> None:
    policy = ci_policy("prod")
    for key in (
        f"adapters/{OTHER_MODEL}/medical/v1/adapter_model.safetensors",
        f"adapters/{OTHER_MODEL}/medical/v1/_manifest.json",
        f"registry/{OTHER_MODEL}/prod.json",
        f"registry/{MODELS[0]}/staging.json",
        f"registry/{MODELS[0]}/prod.json.bak",
        f"registry/{MODELS[0]}/prod/x.json",
        "registry/prod.json",
        f"adapters/{MODELS[0]}x/medical/v1/_manifest.json",  # a model whose name starts with a fleet model's
        f"compile-cache/{MODELS[0]}/prod/ecs/k/v/_manifest.json",
    ):
        assert not permits(policy, "s3:PutObject", key), key
    assert not permits(policy, "s3:GetObject", f"models/{OTHER_MODEL}/main/config.json")
    staging = ci_policy("staging")
    assert permits(staging, "s3:PutObject", f"registry/{MODELS[0]}/staging.json")
    assert not permits(staging, "s3:PutObject", f"registry/{MODELS[0]}/prod.json")


def test_ci_write_resources_name_each_model_and_no_folder_wildcard() -> None:
    statements = {s["Sid"]: s for s in ci_publisher_statements(BUCKET, "team", KEY_ARN, models=[*MODELS, MODELS[0]], stage="prod")}
    assert statements["PublishAdapters"]["Resource"] == [f"{BUCKET_ARN}/team/adapters/{m}/*" for m in MODELS]
    assert statements["UpdateRegistry"]["Resource"] == [f"{BUCKET_ARN}/team/registry/{m}/prod.json" for m in MODELS]
    assert statements["ReadBaseModelMetadata"]["Resource"] == [
        f"{BUCKET_ARN}/team/models/{m}/*/{name}" for m in MODELS for name in ("config.json", "_manifest.json")
    ]


@pytest.mark.parametrize(
    ("models", "stage", "message"),
    [
        ((), "prod", r"models: must be a non-empty list of model names, but \(\) was given"),
        ("qwen3-small", "prod", r"models: must be a non-empty list of model names, but 'qwen3-small' was given"),
        (("*",), "prod", r"model: must match .*, but '\*' was given"),
        (("qwen3/small",), "prod", r"but 'qwen3/small' was given"),
        (MODELS, "*", r"stage: must match .*, but '\*' was given"),
        (MODELS, "Prod", r"stage: must match .*, but 'Prod' was given"),
    ],
)
def test_ci_statements_refuse_a_model_or_stage_that_would_widen_a_resource(models, stage: str, message: str) -> None:
    with pytest.raises(AccessError, match=message):
        ci_publisher_statements(BUCKET, "", KEY_ARN, models=models, stage=stage)


# --- the CI role's trust ----------------------------------------------------------------------


def test_the_subject_names_one_environment_or_one_ref() -> None:
    assert github_subject("acme/llm-adapters", environment="prod") == "repo:acme/llm-adapters:environment:prod"
    assert github_subject("acme/llm-adapters", ref="refs/heads/main") == "repo:acme/llm-adapters:ref:refs/heads/main"
    assert github_subject("acme/x", ref="refs/tags/release/v1.2") == "repo:acme/x:ref:refs/tags/release/v1.2"


@pytest.mark.parametrize(
    ("repo", "environment", "ref", "message"),
    [
        ("acme/x", None, None, r"name exactly one, but environment=None and ref=None were given"),
        ("acme/x", "prod", "refs/heads/main", r"name exactly one, but environment='prod' and ref='refs/heads/main'"),
        ("acme/x", "*", None, r"github_environment: must be a GitHub environment name.*, but '\*' was given"),
        ("acme/x", "prod:ref:x", None, r"github_environment: .* but 'prod:ref:x' was given"),
        ("acme/x", None, "refs/heads/*", r"github_ref: must be refs/heads/<branch> or refs/tags/<tag>, no wildcard, but 'refs/heads/\*'"),
        ("acme/x", None, "main", r"github_ref: .* but 'main' was given"),
        ("acme/x", None, "refs/pull/1/merge", r"github_ref: .* but 'refs/pull/1/merge' was given"),
        ("acme/x", None, "refs/heads/../x", r"github_ref: .* but 'refs/heads/../x' was given"),
        ("acme", "prod", None, r"github_repo: must be a GitHub 'owner/name', but 'acme' was given"),
        ("acme/*", "prod", None, r"github_repo: .* but 'acme/\*' was given"),
    ],
)
def test_the_subject_refuses_wildcards_and_ambiguity(repo: str, environment, ref, message: str) -> None:
    with pytest.raises(AccessError, match=message):
        github_subject(repo, environment=environment, ref=ref)


# --- the serving roles' writes ----------------------------------------------------------------


def test_a_server_writes_only_its_own_stage_and_target_compile_cache() -> None:
    store = StoreLocation(BUCKET, "team")
    scope = serving_scope(store, "qwen3-small", "prod", "ecs")
    assert scope.writes == ("team/compile-cache/qwen3-small/prod/ecs",)
    assert scope.reads == (
        "team/models/qwen3-small",
        "team/adapters/qwen3-small",
        "team/registry/qwen3-small",
        "team/compile-cache/qwen3-small/prod/ecs",
    )
    others = {
        serving_scope(store, "qwen3-small", stage, target).writes
        for stage in ("prod", "staging")
        for target in ("ecs", "sagemaker")
    }
    assert len(others) == 4  # no two stages or targets share what they write
    written = ModelStore(store, s3_client=None).compile_cache_prefix("qwen3-small", "prod", "ecs", "abc123", "v1")
    assert written.startswith(scope.writes[0] + "/")  # what the server publishes is under its grant
    with pytest.raises(AccessError, match=r"target 'local' is not one of \['ecs', 'sagemaker'\]"):
        serving_scope(store, "qwen3-small", "prod", "local")
    with pytest.raises(AccessError, match=r"stage '\*' is not a safe path segment"):
        serving_scope(store, "qwen3-small", "*", "ecs")


# --- versions are write-once ------------------------------------------------------------------


def deny_applies(statement: dict, key: str) -> bool:
    """Whether the write-once Deny refuses a PutObject of `key` sent without If-None-Match."""
    policy = IAMPolicy(json.dumps({"Version": POLICY_VERSION, "Statement": [statement]}))
    return policy.is_action_permitted("s3:PutObject", f"{BUCKET_ARN}/{key}") == PermissionResult.DENIED


@pytest.mark.parametrize("prefix", ["", "team"])
def test_a_manifest_put_without_if_none_match_is_denied_to_everyone(prefix: str) -> None:
    statement = write_once_statement(BUCKET, prefix)
    root = f"{prefix}/" if prefix else ""
    for key in (
        "models/qwen3-small/main/_manifest.json",
        "adapters/qwen3-small/medical/v1/_manifest.json",
        "compile-cache/qwen3-small/prod/ecs/abc123/20261101T000000Z-1a2b/_manifest.json",
    ):
        assert deny_applies(statement, root + key), key
    for key in (
        "models/qwen3-small/main/model.safetensors",
        "adapters/qwen3-small/medical/v1/adapter_model.safetensors",
        "registry/qwen3-small/prod.json",  # changed by compare-and-swap, not write-once
        "compile-cache/qwen3-small/prod/ecs/abc123/v/vllm/model.pt",
        "adapters/qwen3-small/medical/v1/_manifest.json.partial",
    ):
        assert not deny_applies(statement, root + key), key
    assert statement["Effect"] == "Deny" and statement["Principal"] == {"AWS": "*"}
    assert statement["Action"] == ["s3:PutObject"]
    # The Deny holds only while the request has no If-None-Match header (key absent = Null true).
    assert statement["Condition"] == {"Null": {"s3:if-none-match": "true"}}
