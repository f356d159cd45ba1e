"""A role the CI workflows of one GitHub repository assume (OIDC) to publish and promote adapters
for one stage.

Who: only jobs whose OIDC subject is exactly `repo:<owner>/<name>:environment:<env>` (default:
the GitHub environment named after the stage, whose protection rules, such as required
reviewers, then guard the role) or `repo:<owner>/<name>:ref:<ref>` when a ref is named instead;
never any branch or pull-request workflow. What: model_store.store.access.ci_publisher_statements for
the fleet's models and this stage: write adapter versions under `adapters/<model>/`, read and
write `registry/<model>/<stage>.json`, read each model revision's `config.json` and
`_manifest.json` (adapter validation), list key names in the store bucket (so missing keys are
404, not 403): never weights, no other model or stage, no other bucket, no infrastructure.
"""

from __future__ import annotations

from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from llmfleet.model_store.store.access import (
    AccessError,
    check_models,
    check_stage,
    ci_publisher_statements,
    github_subject,
)
from llmfleet.model_store.store.store import StoreLocation
from llmfleet.stacks.compliance import acknowledge, nag_rendered
from llmfleet.stacks.config import StackConfigError

GITHUB_OIDC_URL = "https://token.actions.githubusercontent.com"
GITHUB_OIDC_HOST = "token.actions.githubusercontent.com"
# Why each statement of model_store.store.access needs a wildcard resource (cdk-nag AwsSolutions-IAM5).
WILDCARD_REASONS = {
    "PublishAdapters": "CI publishes adapter versions under adapters/<model>/ of the fleet's models; keys below it are chosen at publish time",
    "ReadBaseModelMetadata": "adapter validation reads config.json and _manifest.json of the fleet's models at any revision, never weights",
}


@dataclass(frozen=True)
class CiAccessProps:
    """github_repo: owner/name whose workflows may assume the role (required). store: the
    bucket CI publishes adapters to. key: the store's KMS key. models: the fleet's models, the
    only ones whose adapters and registry documents the role may write (required). stage: the
    stage whose registry documents it may change (required). github_environment: the GitHub
    environment whose jobs may assume the role (default None: the stage's name, unless
    github_ref is given). github_ref: trust jobs on this exact ref instead, e.g.
    `refs/heads/main` (default None: trust the environment). existing_provider_arn: the
    account's GitHub OIDC provider when one exists already (default None: create it).

    | value | rule |
    |---|---|
    | github_repo | `owner/name` (GITHUB_RULES) |
    | github_environment | letters, digits, `.`, `_`, `-`; not together with github_ref |
    | github_ref | `refs/heads/<branch>` or `refs/tags/<tag>`, no wildcard |
    | models, stage | model names and a stage as the fleet manifest allows them |
    """

    github_repo: str  # owner/name
    store: StoreLocation
    key: kms.IKey
    models: tuple[str, ...]
    stage: str
    github_environment: str | None = None
    github_ref: str | None = None
    # An account holds one provider per URL; pass its ARN when it exists already.
    existing_provider_arn: str | None = None

    def __post_init__(self) -> None:
        try:
            check_models(self.models)
            check_stage(self.stage)
            _ = self.subject  # checks the repository, and the environment or ref
        except AccessError as exc:
            raise StackConfigError(f"CiAccessProps.{exc}") from None

    @property
    def subject(self) -> str:
        """The exact OIDC subject the role trusts: the ref when one is given, else the environment
        (default: the stage's name)."""
        if self.github_ref is not None:
            return github_subject(self.github_repo, environment=self.github_environment, ref=self.github_ref)
        return github_subject(self.github_repo, environment=self.github_environment or self.stage)


class CiAccessConstruct(Construct):
    """GitHub OIDC provider and one stage's adapter-publishing role (attribute `role`)."""

    def __init__(self, scope: Construct, id: str, props: CiAccessProps) -> None:
        super().__init__(scope, id)
        if props.existing_provider_arn:
            self.provider = iam.OidcProviderNative.from_oidc_provider_arn(self, "GitHub", props.existing_provider_arn)
        else:
            self.provider = iam.OidcProviderNative(self, "GitHub", url=GITHUB_OIDC_URL, client_ids=["sts.amazonaws.com"])
        self.subject = props.subject
        self.role = iam.Role(
            self,
            "Role",
            description=f"CI jobs of {self.subject}: publish adapters, update the {props.stage} adapter registry",
            max_session_duration=cdk.Duration.hours(1),
            # StringEquals: the subject is compared exactly; no branch or pull-request workflow matches it.
            assumed_by=iam.WebIdentityPrincipal(
                self.provider.oidc_provider_arn,
                conditions={
                    "StringEquals": {
                        f"{GITHUB_OIDC_HOST}:aud": "sts.amazonaws.com",
                        f"{GITHUB_OIDC_HOST}:sub": self.subject,
                    },
                },
            ),
        )
        # The statements live in model_store.store.access, shared with the local fleet's emulated role.
        statements = ci_publisher_statements(
            props.store.bucket, props.store.prefix, props.key.key_arn, cdk.Aws.PARTITION, models=props.models, stage=props.stage
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
