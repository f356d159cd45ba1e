"""A role CI workflows of one GitHub repository assume (OIDC) to publish and promote adapters.

Its rights are model_store.access.ci_publisher_statements: write adapter versions under
`adapters/`, read/write the registry under `registry/`, read each model revision's
`config.json` and `_manifest.json` (adapter validation), list key names in the store
bucket (so missing keys are 404, not 403): never weights, no other bucket, no infrastructure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from model_store.access import ci_publisher_statements
from model_store.store import StoreLocation
from stacks.compliance import acknowledge, nag_rendered
from stacks.config import StackConfigError

GITHUB_OIDC_URL = "https://token.actions.githubusercontent.com"
GITHUB_OIDC_HOST = "token.actions.githubusercontent.com"
REPOSITORY = r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$"
# Why each statement of model_store.access needs a wildcard resource (cdk-nag AwsSolutions-IAM5).
WILDCARD_REASONS = {
    "PublishAdapters": "CI publishes adapter versions under adapters/; keys below it are chosen at publish time",
    "UpdateRegistry": "CI updates the adapter registry under registry/; one object per model and stage",
    "ReadBaseModelMetadata": "adapter validation reads base-model config.json and _manifest.json, never weights",
}


@dataclass(frozen=True)
class CiAccessProps:
    """github_repo: owner/name whose workflows may assume the role (required). store: the
    bucket CI publishes adapters and models to. key: the store's KMS key. existing_provider_arn:
    the account's GitHub OIDC provider when one exists already (default None: create it)."""

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
        # The statements live in model_store.access, shared with the local fleet's emulated role.
        statements = ci_publisher_statements(
            props.store.bucket, props.store.prefix, props.key.key_arn, cdk.Aws.PARTITION
        )
        for statement in statements:
            self.role.add_to_principal_policy(iam.PolicyStatement.from_json(statement))
        # Resources with a wildcard (keys chosen at publish time) are what cdk-nag's IAM5 flags.
        for statement in statements:
            for arn in statement["Resource"]:
                if "*" in arn:
                    acknowledge(
                        self.role,
                        f"AwsSolutions-IAM5[Resource::{nag_rendered(arn)}]",
                        WILDCARD_REASONS[statement["Sid"]],
                    )
