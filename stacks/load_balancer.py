"""The load balancer a service's clients reach, shared by a model's GPU service and the fleet's gateway:
security group, ALB (streaming idle timeout, invalid headers dropped, access logs, deletion
protection), the clients' ingress and a listener whose default answer is 403 (HTTPS with a
certificate, else plain HTTP with a warning; internal ones plain HTTP inside the VPC).
"""

from __future__ import annotations

from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_s3 as s3
from constructs import Construct

from llmfleet.model_store.gateway.contract import UPSTREAM_HTTP_PORT
from llmfleet.stacks.compliance import acknowledge, checkov_skip
from llmfleet.stacks.metrics import ONE_MINUTE

# The ALB closes a connection idle this long. A streamed completion is silent until its first
# token, which behind a queue and a long prefill can take minutes (ALB default 60 s cuts it).
STREAM_IDLE_TIMEOUT = cdk.Duration.minutes(10)
ALB_LOG_PREFIX = "alb"
PLAIN_HTTP = (
    "no certificate_arn in context: plain HTTP for a first look, with a synth warning; "
    "production deploys pass -c certificate_arn=... and get HTTPS only"
)
INTERNAL_HTTP = (
    "an internal load balancer in private subnets, reached only from the gateway's security group; clients "
    "reach the gateway over the public load balancer's HTTPS (an ACM certificate cannot name an internal ALB's "
    "DNS name without a private CA)"
)


def forbidden() -> elbv2.ListenerAction:
    """What a listener answers a path it does not forward."""
    return elbv2.ListenerAction.fixed_response(403, content_type="text/plain", message_body="forbidden")


class LoadBalancerMetrics:
    """The metrics of a service behind a load balancer and target group (attributes `load_balancer`,
    `target_group`): the CDK guideline, a construct names its own metrics."""

    load_balancer: elbv2.ApplicationLoadBalancer
    target_group: elbv2.ApplicationTargetGroup

    def metric_requests(self) -> cloudwatch.Metric:
        """Requests the load balancer forwarded to the service's tasks, per minute."""
        return self.target_group.metrics.request_count(period=ONE_MINUTE, statistic="Sum")

    def metric_target_5xx(self) -> cloudwatch.Metric:
        """5xx answers from the tasks themselves, per minute."""
        return self.target_group.metrics.http_code_target(elbv2.HttpCodeTarget.TARGET_5XX_COUNT, period=ONE_MINUTE)

    def metric_load_balancer_5xx(self) -> cloudwatch.Metric:
        """5xx the load balancer made up (no healthy target, timeouts), per minute."""
        return self.load_balancer.metrics.http_code_elb(elbv2.HttpCodeElb.ELB_5XX_COUNT, period=ONE_MINUTE)


@dataclass(frozen=True)
class LoadBalancerParts:
    security_group: ec2.SecurityGroup
    load_balancer: elbv2.ApplicationLoadBalancer


def client_load_balancer(
    scope: Construct,
    *,
    vpc: ec2.IVpc,
    description: str,
    access_logs: s3.IBucket,
    log_prefix: str,
    deletion_protection: bool,
    internal: bool = False,
) -> LoadBalancerParts:
    """Security group "AlbSecurityGroup" (no egress until rules are added) and ALB "Alb" under `scope`."""
    security_group = ec2.SecurityGroup(
        scope, "AlbSecurityGroup", vpc=vpc, description=description, allow_all_outbound=False
    )
    load_balancer = elbv2.ApplicationLoadBalancer(
        scope,
        "Alb",
        vpc=vpc,
        internet_facing=not internal,
        vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS) if internal else None,
        security_group=security_group,
        idle_timeout=STREAM_IDLE_TIMEOUT,
        drop_invalid_header_fields=True,
        http2_enabled=True,
        deletion_protection=deletion_protection,
    )
    if not deletion_protection:
        acknowledge(
            load_balancer,
            "NIST.800.53.R5-ELBDeletionProtectionEnabled",
            "-c deletion_protection=off: a demo stage that `cdk destroy` must be able to remove",
        )
    load_balancer.log_access_logs(access_logs, prefix=f"{ALB_LOG_PREFIX}/{log_prefix}")
    return LoadBalancerParts(security_group=security_group, load_balancer=load_balancer)


def allow_clients(security_group: ec2.SecurityGroup, allowed_cidr: str, https: bool, description: str) -> None:
    """Clients from `allowed_cidr` on 443 (80 without a certificate)."""
    port = 443 if https else 80
    security_group.add_ingress_rule(ec2.Peer.ipv4(allowed_cidr), ec2.Port.tcp(port), description)
    if allowed_cidr == "0.0.0.0/0":
        reason = (
            "a public inference API: every request needs the API key and only client paths are forwarded; "
            "narrow it with -c allowed_cidr=..."
        )
        acknowledge(security_group, "AwsSolutions-EC23", reason)
        if not https:
            checkov_skip(security_group, "CKV_AWS_260", reason)


def client_listener(
    load_balancer: elbv2.ApplicationLoadBalancer,
    *,
    certificate_arn: str | None,
    default_action: elbv2.ListenerAction,
    what: str,
    internal: bool = False,
) -> elbv2.ApplicationListener:
    """HTTPS on 443 (TLS 1.3 policy) with a certificate; else HTTP on 80, with a synth warning naming
    `what` when public. Only the default action: callers add their path rules."""
    if certificate_arn is not None and not internal:
        return load_balancer.add_listener(
            "Https",
            port=443,
            protocol=elbv2.ApplicationProtocol.HTTPS,
            certificates=[elbv2.ListenerCertificate.from_arn(certificate_arn)],
            ssl_policy=elbv2.SslPolicy.RECOMMENDED_TLS,
            default_action=default_action,
            open=False,
        )
    listener = load_balancer.add_listener(
        "Http",
        port=UPSTREAM_HTTP_PORT,
        protocol=elbv2.ApplicationProtocol.HTTP,
        default_action=default_action,
        open=False,
    )
    if internal:
        reason = INTERNAL_HTTP
        acknowledge(
            load_balancer,
            "NIST.800.53.R5-ALBWAFEnabled",
            "internal: the gateway's public load balancer carries the WAF; nothing else reaches this one",
        )
    else:
        reason = PLAIN_HTTP
        cdk.Annotations.of(listener).add_warning(
            f"{what}: the load balancer listens on plain HTTP, so the API key crosses the "
            f"network in clear text. Give an ACM certificate for HTTPS: certificate_arn "
            f"(-c certificate_arn=arn:aws:acm:...)."
        )
    for check_id in ("CKV_AWS_2", "CKV_AWS_103"):
        checkov_skip(listener, check_id, reason)
    acknowledge(listener, "NIST.800.53.R5-ALBHttpToHttpsRedirection", reason)
    acknowledge(load_balancer, "NIST.800.53.R5-ELBv2ACMCertificateRequired", reason)
    return listener
