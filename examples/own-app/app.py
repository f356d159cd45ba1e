#!/usr/bin/env python3
"""A platform team's own CDK app: their stack holds their VPC, KMS key, log bucket and model
bucket, and adds the fleet (fleet.yaml beside this file) as one construct that uses them.

    cd examples/own-app && npx cdk synth -c vllm_image=vllm/vllm-openai:<tag>@sha256:<digest>

cdk-nag is the team's choice: `-c nag=off` leaves it out; the fleet itself passes both packs.
docs/construct.md describes every prop of LlmFleet.
"""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from llmfleet.model_store.planning.fleet import load_and_plan
from llmfleet.model_store.contract.plan import AnyPlan
from llmfleet.stacks.compliance import acknowledge, add_compliance_checks, checkov_skip
from llmfleet.stacks.llm_fleet import LlmFleet, LlmFleetProps

FLEET = Path(__file__).resolve().parent / "fleet.yaml"
MODEL_BUCKET = "acme-ml-models"  # fleet.yaml's `store` names it too
ADAPTERS_REPO = "acme/llm-adapters"  # the GitHub repository whose workflows publish adapters


class InferenceStack(cdk.Stack):
    """The team's stack: their network and buckets, then the fleet on them."""

    def __init__(self, scope: Construct, id: str, *, plans: list[AnyPlan], base_image: str, **kwargs) -> None:
        super().__init__(scope, id, **kwargs)
        self.key = kms.Key(self, "Key", enable_key_rotation=True, description="acme: ML models and their logs")
        self.logs = s3.Bucket(
            self,
            "Logs",
            encryption=s3.BucketEncryption.S3_MANAGED,  # load balancers deliver access logs to SSE-S3 buckets only
            enforce_ssl=True,
            versioned=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        )
        flow_logs = ec2.FlowLogDestination.to_s3(self.logs, "vpc-flow-logs/")
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=2,
            nat_gateways=1,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24, map_public_ip_on_launch=False
                ),
                ec2.SubnetConfiguration(name="private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=20),
            ],
            restrict_default_security_group=False,
            gateway_endpoints={"S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)},
            flow_logs={"All": ec2.FlowLogOptions(destination=flow_logs)},
        )
        self.models = s3.Bucket(
            self,
            "Models",
            bucket_name=MODEL_BUCKET,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,
            enforce_ssl=True,
            versioned=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.logs,
            server_access_logs_prefix=f"s3/{MODEL_BUCKET}/",
        )
        self._acknowledge_own_findings()
        # The fleet: servers in this VPC, models read from this bucket (decrypted with its key), logs
        # in this log bucket; the alarm topic, the image repository and the image are created.
        self.fleet = LlmFleet(
            self,
            "Fleet",
            LlmFleetProps(
                plans=plans, vpc=self.vpc, store_bucket=self.models, log_bucket=self.logs, base_image=base_image
            ),
        )
        # CI jobs of the adapters repository's `prod` environment publish and promote adapters.
        self.ci = self.fleet.add_ci_access(ADAPTERS_REPO)

    def _acknowledge_own_findings(self) -> None:
        """The team's exceptions for their own resources, for cdk-nag and checkov (they run both)."""
        loop = "this bucket is the access-log destination; logging it would loop"
        acknowledge(self.logs, "AwsSolutions-S1", loop)
        checkov_skip(self.logs, "CKV_AWS_18", loop)
        acknowledge(self.logs, "NIST.800.53.R5-S3DefaultEncryptionKMS", "load balancers log to SSE-S3 buckets only")
        for bucket in (self.logs, self.models):
            acknowledge(bucket, "NIST.800.53.R5-S3BucketReplicationEnabled", "one region; replication comes later")
        acknowledge(self.vpc, "NIST.800.53.R5-VPCDefaultSecurityGroupClosed", "no one uses the default security group")
        for subnet in self.vpc.public_subnets:
            acknowledge(subnet, "NIST.800.53.R5-VPCNoUnrestrictedRouteToIGW", "load balancers and the NAT only")


def build(app: cdk.App) -> InferenceStack:
    """The team's stack in `app`, its fleet planned from fleet.yaml (and its lock, if any)."""
    _, plans = load_and_plan(FLEET)
    return InferenceStack(
        app,
        "acme-inference",
        plans=plans,
        base_image=app.node.try_get_context("vllm_image"),
        env=cdk.Environment(region=plans[0].region),
    )


if __name__ == "__main__":
    app = cdk.App()
    build(app)
    if app.node.try_get_context("nag") != "off":
        add_compliance_checks(app)  # cdk-nag's AwsSolutions and NIST 800-53 R5 packs, over the whole app
    app.synth()
