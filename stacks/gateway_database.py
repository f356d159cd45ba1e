"""The gateway's usage database: Aurora Serverless v2 PostgreSQL, reached only from the gateway's tasks.

One row per request (consumer, model, adapter, tokens, latency, status) for `llmfleet usage` and
charge-back; budgets are summed from it. Encrypted at rest with the gateway's key and in transit
(`rds.force_ssl`), credentials generated into a secret, automated backups, deletion protection.
"""

from __future__ import annotations

from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from constructs import Construct

from llmfleet.model_store.gateway.contract import DEFAULT_DB_NAME, POSTGRES_PORT
from llmfleet.stacks.compliance import acknowledge, checkov_skip
from llmfleet.stacks.config import StackConfigError
from llmfleet.stacks.metrics import FIVE_MINUTES

ENGINE_VERSION = rds.AuroraPostgresEngineVersion.VER_17_7
DB_USER = "llmfleet"
# Serverless v2 capacity in ACUs (1 ACU ~ 2 GiB): usage rows are small inserts; 0.5 is Aurora's floor.
MIN_ACU, MAX_ACU = 0.5, 4
BACKUP_DAYS = 14  # automated backups (point-in-time restore); a final snapshot is kept on removal
ACU_LIMIT = 256  # Aurora Serverless v2's largest capacity (Aurora user guide, 2026-11)


@dataclass(frozen=True)
class GatewayDatabaseProps:
    """cluster_identifier: the cluster's name, `llmfleet-<fleet>-<stage>-gateway` (its log group is named
    after it). vpc: the fleet's network (the cluster goes into its private subnets, two AZs). key: the KMS
    key for storage, the credentials secret and Performance Insights. log_key: the KMS key of its log group
    (CloudWatch Logs must be allowed to use it). deletion_protection: the cluster
    refuses deletion, and `cdk destroy` leaves a final snapshot (default True; False: a demo stage, the
    cluster goes with the stack). min_acu, max_acu: Serverless v2 capacity bounds (defaults 0.5 and 4)."""

    cluster_identifier: str
    vpc: ec2.IVpc
    key: kms.IKey
    log_key: kms.IKey
    deletion_protection: bool = True
    min_acu: float = MIN_ACU
    max_acu: float = MAX_ACU

    def __post_init__(self) -> None:
        if not MIN_ACU <= self.min_acu <= self.max_acu <= ACU_LIMIT:
            raise StackConfigError(
                f"GatewayDatabaseProps: min_acu {self.min_acu}, max_acu {self.max_acu}; "
                f"must satisfy {MIN_ACU} <= min_acu <= max_acu <= {ACU_LIMIT}"
            )


class GatewayDatabaseConstruct(Construct):
    """Security group (no ingress until `allow_from`), TLS-only parameter group, Aurora PostgreSQL
    cluster (a writer and a reader in another AZ), its generated secret. Attributes: cluster, secret,
    security_group."""

    def __init__(self, scope: Construct, id: str, props: GatewayDatabaseProps) -> None:
        super().__init__(scope, id)
        engine = rds.DatabaseClusterEngine.aurora_postgres(version=ENGINE_VERSION)
        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=props.vpc,
            description="gateway usage database (gateway tasks only)",
            allow_all_outbound=False,
        )
        # Clients must use TLS: the server refuses plain connections.
        parameters = rds.ParameterGroup(self, "Parameters", engine=engine, parameters={"rds.force_ssl": "1"})
        removal = cdk.RemovalPolicy.SNAPSHOT if props.deletion_protection else cdk.RemovalPolicy.DESTROY
        # Made before the cluster so that RDS exports into it (encrypted, kept 90 days) rather than into a
        # log group of its own that never expires (the cluster's retention option would need a Lambda).
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=f"/aws/rds/cluster/{props.cluster_identifier}/postgresql",
            encryption_key=props.log_key,
            retention=logs.RetentionDays.THREE_MONTHS,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        # Each instance says what the cluster says, so CDK need not warn that it overrides them.
        instance = dict(
            auto_minor_version_upgrade=True,
            enable_performance_insights=True,
            performance_insight_encryption_key=props.key,
        )
        self.cluster = rds.DatabaseCluster(
            self,
            "Cluster",
            cluster_identifier=props.cluster_identifier,
            engine=engine,
            vpc=props.vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            security_groups=[self.security_group],
            port=POSTGRES_PORT,
            default_database_name=DEFAULT_DB_NAME,
            credentials=rds.Credentials.from_generated_secret(DB_USER, encryption_key=props.key),
            parameter_group=parameters,
            # A writer and a reader in another AZ: a failover promotes the reader within a minute.
            writer=rds.ClusterInstance.serverless_v2("Writer", **instance),
            readers=[rds.ClusterInstance.serverless_v2("Reader", scale_with_writer=True, **instance)],
            serverless_v2_min_capacity=props.min_acu,
            serverless_v2_max_capacity=props.max_acu,
            storage_encrypted=True,
            storage_encryption_key=props.key,
            iam_authentication=True,
            backup=rds.BackupProps(retention=cdk.Duration.days(BACKUP_DAYS)),
            copy_tags_to_snapshot=True,
            deletion_protection=props.deletion_protection,
            removal_policy=removal,
            cloudwatch_logs_exports=["postgresql"],
            monitoring_interval=cdk.Duration.minutes(1),
            enable_performance_insights=True,
            performance_insight_encryption_key=props.key,
        )
        self.cluster.node.add_dependency(self.log_group)
        self.secret = self.cluster.secret
        self._acknowledge(props)

    def _acknowledge(self, props: GatewayDatabaseProps) -> None:
        port = (
            "PostgreSQL's own port, the one the gateway contract names (gateway_contract.POSTGRES_PORT); the "
            "security group admits only the gateway's tasks, in private subnets, so another port would hide nothing"
        )
        acknowledge(self.cluster, "AwsSolutions-RDS11", port)
        rotation = (
            "the generated password reaches the gateway tasks as ECS secrets at their start; rotating it needs a "
            "rolling restart of the service, so the operator rotates it "
            "(aws secretsmanager rotate-secret, then a deploy)"
        )
        generated = self.cluster.node.find_child("Secret")  # `secret` is its attachment to the cluster
        acknowledge(generated, "AwsSolutions-SMG4", rotation)
        acknowledge(generated, "NIST.800.53.R5-SecretsManagerRotationEnabled", rotation)
        acknowledge(
            self.cluster.node.find_child("MonitoringRole"),
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/"
            "service-role/AmazonRDSEnhancedMonitoringRole]",
            "the AWS-managed policy RDS enhanced monitoring requires: it lets RDS write OS metrics to its own "
            "RDSOSMetrics log group, nothing else",
        )
        acknowledge(
            self.cluster,
            "NIST.800.53.R5-RDSInBackupPlan",
            f"Aurora's automated backups ({BACKUP_DAYS} days, point-in-time restore) and a final snapshot on removal; "
            f"an AWS Backup plan on top is the operator's choice",
        )
        if not props.deletion_protection:
            reason = "deletion_protection=off: a demo stage that `cdk destroy` must be able to remove"
            for finding in ("AwsSolutions-RDS10", "NIST.800.53.R5-RDSInstanceDeletionProtectionEnabled"):
                acknowledge(self.cluster, finding, reason)
            checkov_skip(self.cluster, "CKV_AWS_139", reason)

    def allow_from(self, peer: ec2.IConnectable) -> None:
        """Let `peer` (the gateway's tasks) connect on the PostgreSQL port; the rules live in the peer's stack."""
        peer.connections.allow_to(self.cluster, ec2.Port.tcp(POSTGRES_PORT), "to the gateway usage database")

    def metric_cpu(self) -> cloudwatch.Metric:
        """The cluster's CPU %, the busiest instance over five minutes."""
        return self.cluster.metric_cpu_utilization(statistic="Maximum", period=FIVE_MINUTES)

    def metric_connections(self) -> cloudwatch.Metric:
        return self.cluster.metric_database_connections(statistic="Maximum", period=FIVE_MINUTES)

    def metric_capacity(self) -> cloudwatch.Metric:
        """ACUs in use (Serverless v2), the largest over five minutes."""
        return self.cluster.metric("ServerlessDatabaseCapacity", statistic="Maximum", period=FIVE_MINUTES)
