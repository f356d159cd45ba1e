"""Compliance checks and their written exceptions.

cdk-nag 3 runs as a CDK policy-validation plugin (not an Aspect); checkov reads skips from
`Metadata.checkov.skip` on each resource. Both helpers demand a reason so every exception is
documented next to the construct it excuses (the README's security section lists them all).
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from cdk_nag import AwsSolutionsChecks, NIST80053R5Checks
from constructs import IConstruct

# The rule prefixes of the packs `add_compliance_checks` runs.
NAG_PACKS = ("AwsSolutions-", "NIST.800.53.R5-")


def add_compliance_checks(scope: IConstruct) -> None:
    """Run cdk-nag's AwsSolutions and NIST 800-53 R5 packs at synth on every stack of `scope`'s app
    (policy-validation plugins belong to the app, not to a stack); a finding fails synthesis.

    Opt-in: LlmFleet never calls it. The fleet's own exceptions are acknowledged next to the
    constructs they excuse, so an app of LlmFleet alone passes both packs."""
    cdk.Validations.of(scope).add_plugins(AwsSolutionsChecks(scope), NIST80053R5Checks(scope))


def acknowledge_inline_policies(scope: IConstruct) -> None:
    """Acknowledge NIST's inline-policy rule on each role's DefaultPolicy under `scope`, where CDK's
    grants put a role's statements. Call it once the roles under `scope` hold their grants."""
    for construct in scope.node.find_all():
        if isinstance(construct, iam.Policy) and construct.node.id == "DefaultPolicy":
            acknowledge(
                construct,
                "NIST.800.53.R5-IAMNoInlinePolicy",
                "CDK's grants write each role's statements into a policy of that role alone, created and deleted "
                "with it; every statement is scoped (the IAM5 rows list the exceptions)",
            )


def acknowledge(scope: IConstruct, finding: str, reason: str) -> None:
    """Acknowledge one cdk-nag finding (e.g. `AwsSolutions-IAM5[Resource::*]`) on `scope` and below."""
    if not reason.strip():
        raise ValueError(f"acknowledging {finding} needs a reason")
    cdk.Validations.of(scope).acknowledge(cdk.Acknowledgment(id=finding, reason=reason))


def checkov_skip(scope: IConstruct, check_id: str, reason: str) -> None:
    """Skip one checkov check on the CloudFormation resource behind `scope`, with its reason."""
    if not reason.strip():
        raise ValueError(f"skipping {check_id} needs a reason")
    resource = scope if isinstance(scope, cdk.CfnResource) else scope.node.default_child
    if not isinstance(resource, cdk.CfnResource):
        raise ValueError(f"{scope.node.path} has no CloudFormation resource to carry checkov skip {check_id}")
    metadata = resource.get_metadata("checkov") or {"skip": []}
    metadata["skip"] = [*metadata["skip"], {"id": check_id, "comment": reason}]
    resource.add_metadata("checkov", metadata)


def nag_rendered(value: str) -> str:
    """How cdk-nag spells a resource inside a finding id: pseudo-parameter tokens become `<AWS::Name>`."""
    for token, name in ((cdk.Aws.PARTITION, "Partition"), (cdk.Aws.ACCOUNT_ID, "AccountId"), (cdk.Aws.REGION, "Region")):
        value = value.replace(token, f"<AWS::{name}>")
    return value
