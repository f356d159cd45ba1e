"""A role CI workflows of one GitHub repository assume (OIDC) to publish and promote adapters.

It may write adapter versions under `adapters/` and read/write the registry under
`registry/`. Publishing validates an adapter against its base model first, so it may also
read each model revision's `config.json` and `_manifest.json`: never weights, no other
bucket, no infrastructure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from model_store.store import StoreLocation
from stacks.compliance import acknowledge, nag_rendered
from stacks.config import StackConfigError
from stacks.store import object_arn

GITHUB_OIDC_URL = "https://token.actions.githubusercontent.com"
GITHUB_OIDC_HOST = "token.actions.githubusercontent.com"
REPOSITORY = r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$"
ADAPTERS_PREFIX = "adapters"
REGISTRY_PREFIX = "registry"
# The base-model files adapter validation reads (model_store.store: MODEL_CONFIG, MANIFEST_NAME).
MODEL_METADATA_FILES = ("config.json", "_manifest.json")


@dataclass(frozen=True)
class CiAccessProps:
    github_repo: str  # owner/name
    store: StoreLocation
    key: kms.IKey
    # An account holds one provider per URL; pass its ARN when it exists already.
    existing_provider_arn: str | None = None

    def __post_init__(self) -> None:
        if not re.match(REPOSITORY, self.github_repo):
            raise StackConfigError(f"CiAccessProps.github_repo: {self.github_repo!r} is not a GitHub 'owner/name'")


class CiAccessConstruct(Construct):
    """GitHub OIDC provider and the adapter-publishing role (attribute `role`)."""

    def __init__(self, scope: Construct, id: str, props: CiAccessProps) -> None:
        super().__init__(scope, id)
        if props.existing_provider_arn:
            self.provider = iam.OidcProviderNative.from_oidc_provider_arn(self, "GitHub", props.existing_provider_arn)
        else:
            self.provider = iam.OidcProviderNative(self, "GitHub", url=GITHUB_OIDC_URL, client_ids=["sts.amazonaws.com"])
        self.role = iam.Role(
            self,
            "Role",
            description=f"CI of {props.github_repo}: publish adapters, update the adapter registry",
            max_session_duration=cdk.Duration.hours(1),
            assumed_by=iam.WebIdentityPrincipal(
                self.provider.oidc_provider_arn,
                conditions={
                    "StringEquals": {f"{GITHUB_OIDC_HOST}:aud": "sts.amazonaws.com"},
                    "StringLike": {f"{GITHUB_OIDC_HOST}:sub": f"repo:{props.github_repo}:*"},
                },
            ),
        )
        store = props.store
        adapters = object_arn(store.bucket, store.key(ADAPTERS_PREFIX))
        registry = object_arn(store.bucket, store.key(REGISTRY_PREFIX))
        model_metadata = [
            f"arn:{cdk.Aws.PARTITION}:s3:::{store.bucket}/{store.key('models')}/*/{name}" for name in MODEL_METADATA_FILES
        ]
        statements = [
            # Get: a publish checks that the version does not exist yet (HEAD) and reads adapter manifests.
            iam.PolicyStatement(sid="PublishAdapters", actions=["s3:GetObject", "s3:PutObject"], resources=[adapters]),
            iam.PolicyStatement(sid="ReadBaseModelMetadata", actions=["s3:GetObject"], resources=model_metadata),
            iam.PolicyStatement(sid="UpdateRegistry", actions=["s3:GetObject", "s3:PutObject"], resources=[registry]),
            iam.PolicyStatement(
                sid="ListAdaptersAndRegistry",
                actions=["s3:ListBucket"],
                resources=[f"arn:{cdk.Aws.PARTITION}:s3:::{store.bucket}"],
                conditions={"StringLike": {"s3:prefix": [f"{store.key(p)}/*" for p in (ADAPTERS_PREFIX, REGISTRY_PREFIX)]}},
            ),
            # SSE-KMS: writing needs a data key, reading the registry needs Decrypt.
            iam.PolicyStatement(
                sid="StoreKey", actions=["kms:GenerateDataKey", "kms:Decrypt"], resources=[props.key.key_arn]
            ),
        ]
        for statement in statements:
            self.role.add_to_principal_policy(statement)
        for arn, what in (
            (adapters, "CI publishes adapter versions under adapters/; keys below it are chosen at publish time"),
            (registry, "CI updates the adapter registry under registry/; one object per model and stage"),
            *((arn, "adapter validation reads base-model config.json and _manifest.json, never weights")
              for arn in model_metadata),
        ):
            acknowledge(self.role, f"AwsSolutions-IAM5[Resource::{nag_rendered(arn)}]", what)
