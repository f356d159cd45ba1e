"""The store bucket, its key, the log bucket and the ECR repository are secure by default."""

from __future__ import annotations

from aws_cdk.assertions import Match

from tests.synth.conftest import Synthesized, as_list, only


def test_store_bucket_is_kms_encrypted_versioned_private_logged_and_named_by_the_sources(secure_fleet: Synthesized) -> None:
    base = secure_fleet.template(secure_fleet.fleet.base)
    store = only(base.find_resources("AWS::S3::Bucket", {"Properties": {"BucketName": "llmfleet-store"}}))
    (rule,) = store["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    (key_id,) = base.find_resources("AWS::KMS::Key")
    assert rule["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": {"Fn::GetAtt": [key_id, "Arn"]}}
    assert store["VersioningConfiguration"] == {"Status": "Enabled"}
    assert store["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert "DestinationBucketName" in store["LoggingConfiguration"]
    assert any("NoncurrentVersionExpiration" in r for r in store["LifecycleConfiguration"]["Rules"])


def test_every_bucket_refuses_plain_http(secure_fleet: Synthesized) -> None:
    base = secure_fleet.template(secure_fleet.fleet.base)
    buckets = base.find_resources("AWS::S3::Bucket")
    policies = base.find_resources("AWS::S3::BucketPolicy")
    secured = set()
    for policy in policies.values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if statement["Effect"] == "Deny" and statement.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}:
                secured.add(policy["Properties"]["Bucket"]["Ref"])
    assert secured == set(buckets)


def test_key_rotates_and_repository_scans_immutable_tags(secure_fleet: Synthesized) -> None:
    base = secure_fleet.template(secure_fleet.fleet.base)
    base.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})
    base.has_resource_properties(
        "AWS::ECR::Repository",
        {
            "ImageScanningConfiguration": {"ScanOnPush": True},
            "ImageTagMutability": "IMMUTABLE",
            "EncryptionConfiguration": {"EncryptionType": "KMS", "KmsKey": Match.any_value()},
        },
    )


def test_no_policy_anywhere_grants_s3_wildcards_or_s3_on_any_resource(secure_fleet: Synthesized) -> None:
    checked = 0
    for stack in secure_fleet.fleet.stacks:
        for policy in secure_fleet.template(stack).find_resources("AWS::IAM::Policy").values():
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                actions = as_list(statement["Action"])
                assert "*" not in actions and "s3:*" not in actions, (stack.stack_name, statement)
                if any(a.startswith("s3:") for a in actions):
                    checked += 1
                    assert "*" not in as_list(statement["Resource"]), (stack.stack_name, statement)
                    assert all("llmfleet-store" in str(r) for r in as_list(statement["Resource"])), statement
    assert checked >= 10


def test_everything_that_holds_data_is_encrypted_with_a_customer_key(secure_fleet: Synthesized) -> None:
    base = secure_fleet.template(secure_fleet.fleet.base)
    (topic,) = base.find_resources("AWS::SNS::Topic").values()
    assert "KmsMasterKeyId" in topic["Properties"]
    for plan in secure_fleet.fleet.plans:
        synthesized = secure_fleet.model_template(plan.model_name)
        for group in synthesized.find_resources("AWS::Logs::LogGroup").values():
            assert "KmsKeyId" in group["Properties"]
        for secret in synthesized.find_resources("AWS::SecretsManager::Secret").values():
            assert "KmsKeyId" in secret["Properties"]
