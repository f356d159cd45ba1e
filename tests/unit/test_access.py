"""The CI publisher's IAM statements allow exactly what the adapter commands call, and no weights.

Evaluated with moto's IAM policy evaluator (action and resource matching as IAM does it).
"""

from __future__ import annotations

import json

import pytest
from moto.iam.access_control import IAMPolicy, PermissionResult

from llmfleet.model_store.store.access import ci_publisher_statements, POLICY_VERSION

BUCKET = "llmfleet-store"
KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
BUCKET_ARN = f"arn:aws:s3:::{BUCKET}"
MODELS = ("qwen3-small", "r1-distill-14b")
STAGE = "prod"

# The S3 calls of `llmfleet adapter publish/promote/rollback/retire/history/list/versions`
# (model_store.store.store, model_store.store.registry; traced against moto's server) and the IAM action
# S3 checks for each. ListObjectsV2 is below, with the bucket-level grant.
ADAPTER_COMMAND_CALLS = [
    ("GetObject model manifest", "s3:GetObject", "models/qwen3-small/main/_manifest.json"),
    ("GetObject model config", "s3:GetObject", "models/qwen3-small/main/config.json"),
    ("HeadObject version manifest", "s3:GetObject", "adapters/qwen3-small/medical/v1/_manifest.json"),
    ("HeadObject file (resume)", "s3:GetObject", "adapters/qwen3-small/medical/v1/adapter_model.safetensors"),
    ("PutObject file", "s3:PutObject", "adapters/qwen3-small/medical/v1/adapter_model.safetensors"),
    # Create/UploadPart/CompleteMultipartUpload: files above the 16 MiB multipart threshold.
    ("multipart upload", "s3:PutObject", "adapters/qwen3-small/medical/v1/adapter_model.safetensors"),
    ("AbortMultipartUpload", "s3:AbortMultipartUpload", "adapters/qwen3-small/medical/v1/adapter_model.safetensors"),
    ("PutObject manifest If-None-Match", "s3:PutObject", "adapters/qwen3-small/medical/v1/_manifest.json"),
    ("GetObject registry", "s3:GetObject", "registry/qwen3-small/prod.json"),
    ("PutObject registry If-Match", "s3:PutObject", "registry/qwen3-small/prod.json"),
]
MODEL_WEIGHTS = [
    "models/qwen3-small/main/model.safetensors",
    "models/qwen3-small/main/model-00001-of-00004.safetensors",
    "models/qwen3-small/main/tokenizer.json",
]


def statements(prefix: str = "", key_arn: str = KEY_ARN, partition: str = "aws") -> list[dict]:
    return ci_publisher_statements(BUCKET, prefix, key_arn, partition, models=MODELS, stage=STAGE)


def evaluator(prefix: str = "") -> IAMPolicy:
    return IAMPolicy(json.dumps({"Version": POLICY_VERSION, "Statement": statements(prefix)}))


def allowed(policy: IAMPolicy, action: str, resource: str) -> bool:
    return policy.is_action_permitted(action, resource) == PermissionResult.PERMITTED


@pytest.mark.parametrize(("call", "action", "key"), ADAPTER_COMMAND_CALLS, ids=[c[0] for c in ADAPTER_COMMAND_CALLS])
def test_every_call_of_the_adapter_commands_is_allowed(call: str, action: str, key: str) -> None:
    assert allowed(evaluator(), action, f"{BUCKET_ARN}/{key}"), call


def test_listing_is_allowed_on_the_bucket_without_a_prefix_condition() -> None:
    # ListObjectsV2 (adapter versions) and, for HEAD/GET of a key that does not exist yet, a 404
    # instead of a 403: S3 checks ListBucket on the bucket, with no s3:prefix in an object request.
    (listing,) = [s for s in statements() if "s3:ListBucket" in s["Action"]]
    assert listing["Resource"] == [BUCKET_ARN]
    assert "Condition" not in listing
    assert allowed(evaluator(), "s3:ListBucket", BUCKET_ARN)


@pytest.mark.parametrize("key", MODEL_WEIGHTS)
def test_model_weights_are_neither_readable_nor_writable(key: str) -> None:
    policy = evaluator()
    for action in ("s3:GetObject", "s3:PutObject", "s3:GetObjectVersion"):
        assert not allowed(policy, action, f"{BUCKET_ARN}/{key}"), (action, key)


def test_nothing_is_deleted_and_no_base_model_file_is_written() -> None:
    policy = evaluator()
    for key in ("adapters/qwen3-small/medical/v1/_manifest.json", "registry/qwen3-small/prod.json", MODEL_WEIGHTS[0]):
        for action in ("s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObjectAcl", "s3:PutBucketPolicy"):
            assert not allowed(policy, action, f"{BUCKET_ARN}/{key}"), (action, key)
    assert not allowed(policy, "s3:PutObject", f"{BUCKET_ARN}/models/qwen3-small/main/config.json")


def test_no_wildcard_action_no_any_resource_no_infrastructure() -> None:
    for statement in statements():
        assert statement["Effect"] == "Allow"
        assert "*" not in statement["Resource"]
        for action in statement["Action"]:
            service, _, name = action.partition(":")
            assert service in ("s3", "kms") and "*" not in name, action
    policy = evaluator()
    for action in ("iam:PassRole", "cloudformation:UpdateStack", "ecs:UpdateService", "sagemaker:UpdateEndpoint"):
        assert not allowed(policy, action, "*"), action


def test_the_key_is_usable_only_through_s3() -> None:
    (key,) = [s for s in statements() if s["Resource"] == [KEY_ARN]]
    assert sorted(key["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert key["Condition"] == {"StringLike": {"kms:ViaService": "s3.*"}}


def test_a_store_under_a_prefix_grants_only_below_it() -> None:
    policy = evaluator("fleets/demo/")
    m = MODELS[0]
    assert allowed(policy, "s3:PutObject", f"{BUCKET_ARN}/fleets/demo/adapters/{m}/a/v1/adapter_config.json")
    assert allowed(policy, "s3:PutObject", f"{BUCKET_ARN}/fleets/demo/registry/{m}/prod.json")
    assert allowed(policy, "s3:GetObject", f"{BUCKET_ARN}/fleets/demo/models/{m}/main/config.json")
    assert not allowed(policy, "s3:PutObject", f"{BUCKET_ARN}/adapters/{m}/a/v1/adapter_config.json")
    assert not allowed(policy, "s3:PutObject", f"{BUCKET_ARN}/fleets/other/registry/{m}/prod.json")


def test_partition_and_key_may_be_tokens() -> None:
    resources = [r for s in statements("", "${Token[KeyArn]}", "${Token[AWS.Partition]}") for r in s["Resource"]]
    assert "${Token[KeyArn]}" in resources
    assert all(r.startswith("arn:${Token[AWS.Partition]}:s3:::") for r in resources if r != "${Token[KeyArn]}")
