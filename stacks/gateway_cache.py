"""The gateway's shared counters: ElastiCache (Valkey), reached only from the gateway's tasks.

Each consumer's requests and tokens per minute are counted here, so a limit holds across every
gateway task. Encrypted at rest with the gateway's key and in transit (TLS required: `rediss://`),
a replica in another AZ with automatic failover, daily snapshots.
"""

from __future__ import annotations

from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticache as elasticache
from aws_cdk import aws_kms as kms
from constructs import Construct

from llmfleet.model_store.gateway.contract import REDIS_PORT
from llmfleet.stacks.compliance import acknowledge, checkov_skip
from llmfleet.stacks.config import StackConfigError
from llmfleet.stacks.metrics import FIVE_MINUTES

ENGINE, ENGINE_VERSION = "valkey", "8.0"  # Valkey: Redis OSS's protocol, ElastiCache's default engine (2026-11)
NODE_TYPE = "cache.t4g.small"  # counters of a few hundred consumers fit in megabytes
NODES = 2  # a primary and a replica in another AZ
SNAPSHOT_DAYS = 15  # NIST 800-53 R5 asks for 15 days of automatic backups
REPLICATION_GROUP_ID_MAX = 40  # ElastiCache's limit on the identifier


@dataclass(frozen=True)
class GatewayCacheProps:
    """vpc: the fleet's network (nodes go into its private subnets). key: the KMS key for data at rest.
    replication_group_id: the group's name, `llmfleet-<fleet>-<stage>-gw` (at most 40 characters;
    CloudWatch names its nodes `<id>-001`, `<id>-002`, which the alarms watch). node_type: default
    cache.t4g.small."""

    vpc: ec2.IVpc
    key: kms.IKey
    replication_group_id: str
    node_type: str = NODE_TYPE

    def __post_init__(self) -> None:
        if len(self.replication_group_id) > REPLICATION_GROUP_ID_MAX:
            raise StackConfigError(
                f"GatewayCacheProps.replication_group_id: {self.replication_group_id!r} is over "
                f"{REPLICATION_GROUP_ID_MAX} characters; shorten the fleet or stage name"
            )


class GatewayCacheConstruct(Construct):
    """Security group (no ingress until `allow_from`), subnet group, Valkey replication group.
    Attributes: replication_group, security_group, url (`rediss://host:port`)."""

    def __init__(self, scope: Construct, id: str, props: GatewayCacheProps) -> None:
        super().__init__(scope, id)
        self.replication_group_id = props.replication_group_id
        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=props.vpc,
            description="gateway rate-limit cache (gateway tasks only)",
            allow_all_outbound=False,
        )
        self.connections = ec2.Connections(security_groups=[self.security_group], default_port=ec2.Port.tcp(REDIS_PORT))
        private = props.vpc.select_subnets(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        subnets = elasticache.CfnSubnetGroup(
            self,
            "Subnets",
            description="gateway rate-limit cache: the fleet's private subnets",
            subnet_ids=private.subnet_ids,
        )
        self.replication_group = elasticache.CfnReplicationGroup(
            self,
            "Cache",
            replication_group_id=props.replication_group_id,
            replication_group_description="llmfleet gateway: rate-limit counters shared by every gateway task",
            engine=ENGINE,
            engine_version=ENGINE_VERSION,
            cache_node_type=props.node_type,
            num_cache_clusters=NODES,
            automatic_failover_enabled=True,
            multi_az_enabled=True,
            port=REDIS_PORT,
            cache_subnet_group_name=subnets.ref,
            security_group_ids=[self.security_group.security_group_id],
            at_rest_encryption_enabled=True,
            kms_key_id=props.key.key_arn,
            transit_encryption_enabled=True,  # TLS required: clients connect with rediss://
            auto_minor_version_upgrade=True,
            snapshot_retention_limit=SNAPSHOT_DAYS,
        )
        self.replication_group.apply_removal_policy(cdk.RemovalPolicy.DESTROY)  # counters only: a minute's window
        address = self.replication_group.attr_primary_end_point_address
        self.url = f"rediss://{address}:{self.replication_group.attr_primary_end_point_port}"
        for finding, reason in (
            (
                "AwsSolutions-AEC5",
                "the Redis protocol's own port, the one the gateway contract names (gateway_contract.REDIS_PORT); the "
                "security group admits only the gateway's tasks, in private subnets",
            ),
            (
                "AwsSolutions-AEC6",
                "no AUTH token: the security group admits only the gateway's tasks and every connection is TLS; the "
                "cache holds per-minute counters, never keys or prompts",
            ),
        ):
            acknowledge(self.replication_group, finding, reason)
        checkov_skip(self.replication_group, "CKV_AWS_31", reason)  # the AEC6 reason: no AUTH token

    def allow_from(self, peer: ec2.IConnectable) -> None:
        """Let `peer` (the gateway's tasks) connect on the Redis port; the rules live in the peer's stack."""
        peer.connections.allow_to(self.connections, ec2.Port.tcp(REDIS_PORT), "to the gateway rate-limit cache")

    def _node_metrics(self, name: str, statistic: str) -> dict[str, cloudwatch.Metric]:
        return {
            f"{name.lower()}{index}": cloudwatch.Metric(
                namespace="AWS/ElastiCache",
                metric_name=name,
                dimensions_map={"CacheClusterId": f"{self.replication_group_id}-{index:03d}"},
                statistic=statistic,
                period=FIVE_MINUTES,
            )
            for index in range(1, NODES + 1)
        }

    def _busiest_node(self, name: str, statistic: str, label: str) -> cloudwatch.MathExpression:
        """The largest value over the group's nodes: either may be the primary after a failover."""
        nodes = self._node_metrics(name, statistic)
        return cloudwatch.MathExpression(
            expression=f"MAX([{', '.join(nodes)}])", using_metrics=nodes, label=label, period=FIVE_MINUTES
        )

    def metric_cpu(self) -> cloudwatch.MathExpression:
        """The engine thread's CPU %, busiest node."""
        return self._busiest_node("EngineCPUUtilization", "Maximum", "cache engine CPU %")

    def metric_connections(self) -> cloudwatch.MathExpression:
        return self._busiest_node("CurrConnections", "Maximum", "cache connections")

    def metric_evictions(self) -> cloudwatch.MathExpression:
        """Keys evicted for want of memory: a counter evicted resets a consumer's window early."""
        return self._busiest_node("Evictions", "Sum", "cache evictions")
