"""The WAF web ACL in front of a public load balancer (a model's, or the fleet's gateway's): managed rule
groups fit for an LLM API and a per-client rate limit derived from the plans (model_store/planning/edge.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from llmfleet.model_store.planning.edge import MIN_RATE_LIMIT, RATE_WINDOW_SECONDS
from llmfleet.stacks.compliance import acknowledge
from llmfleet.stacks.config import StackConfigError

# The common rule set blocks bodies over 8 KB (SizeRestrictions_BODY): about 2,000 tokens, less than
# most chat prompts. It counts instead; vLLM itself refuses a prompt over the plan's max_model_len.
# WAF on a load balancer inspects the first 8 KB of a body only, so the other body rules still run on that.
COUNTED_MANAGED_RULES = {"AWSManagedRulesCommonRuleSet": ["SizeRestrictions_BODY"]}
# Evaluated in this order, after the rate rule: known exploit payloads (Log4j, ...), IPs AWS threat
# intelligence lists as bots or attackers, then the OWASP-style common set.
MANAGED_RULE_GROUPS = ("AWSManagedRulesAmazonIpReputationList", "AWSManagedRulesKnownBadInputsRuleSet", "AWSManagedRulesCommonRuleSet")
RATE_LIMITED_BODY_KEY = "rate-limited"


@dataclass(frozen=True)
class WebAclProps:
    """name: the web ACL's name, `llmfleet-<fleet>-<stage>-<model or "gateway">` (its metrics and log group
    follow it). rate_limit: requests per RATE_WINDOW_SECONDS from one client address
    (model_store.planning.edge: client_rate_limit, gateway_client_rate_limit). load_balancer: the public load
    balancer to protect. key: the KMS key for the WAF log group. block: block matching requests (default
    True); False counts them only, to watch a new limit before enforcing it."""

    name: str
    rate_limit: int
    load_balancer: elbv2.IApplicationLoadBalancer
    key: kms.IKey
    block: bool = True

    def __post_init__(self) -> None:
        if self.rate_limit < MIN_RATE_LIMIT:
            raise StackConfigError(
                f"WebAclProps.rate_limit for {self.name}: {self.rate_limit}; WAF allows {MIN_RATE_LIMIT} or more"
            )


class WebAclConstruct(Construct):
    """Regional web ACL, its association with the load balancer, and its logging to a log group."""

    def __init__(self, scope: Construct, id: str, props: WebAclProps) -> None:
        super().__init__(scope, id)
        name = props.name
        self.rate_limit = props.rate_limit
        self.web_acl = wafv2.CfnWebACL(
            self,
            "WebAcl",
            scope="REGIONAL",
            default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
            visibility_config=_visibility(name),
            custom_response_bodies={
                RATE_LIMITED_BODY_KEY: wafv2.CfnWebACL.CustomResponseBodyProperty(
                    content_type="APPLICATION_JSON",
                    content=json.dumps(
                        {
                            "error": {
                                "message": f"rate limit exceeded: at most {self.rate_limit} requests per "
                                f"{RATE_WINDOW_SECONDS} s per client address; retry later",
                                "type": "rate_limit_exceeded",
                                "code": 429,
                            }
                        }
                    ),
                )
            },
            rules=[self._rate_rule(name, props.block), *self._managed_rules(name, props.block)],
        )
        self.association = wafv2.CfnWebACLAssociation(
            self, "Association", resource_arn=props.load_balancer.load_balancer_arn, web_acl_arn=self.web_acl.attr_arn
        )
        # WAF delivers only to log groups named aws-waf-logs-*.
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=f"aws-waf-logs-{name}",
            encryption_key=props.key,
            retention=logs.RetentionDays.THREE_MONTHS,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        # WAF wants the log group's ARN without the `:*` suffix `log_group_arn` carries.
        log_group_arn = cdk.Stack.of(self).format_arn(
            service="logs",
            resource="log-group",
            resource_name=self.log_group.log_group_name,
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )
        self.logging = wafv2.CfnLoggingConfiguration(
            self,
            "Logging",
            resource_arn=self.web_acl.attr_arn,
            log_destination_configs=[log_group_arn],
            # API keys travel in this header; they must not land in the logs.
            redacted_fields=[wafv2.CfnLoggingConfiguration.FieldToMatchProperty(single_header={"Name": "authorization"})],
        )

    def _rate_rule(self, name: str, block: bool) -> wafv2.CfnWebACL.RuleProperty:
        over_limit = wafv2.CfnWebACL.RuleActionProperty(
            block=wafv2.CfnWebACL.BlockActionProperty(
                custom_response=wafv2.CfnWebACL.CustomResponseProperty(
                    response_code=429,
                    custom_response_body_key=RATE_LIMITED_BODY_KEY,
                    response_headers=[
                        wafv2.CfnWebACL.CustomHTTPHeaderProperty(name="Retry-After", value=str(RATE_WINDOW_SECONDS))
                    ],
                )
            )
        )
        return wafv2.CfnWebACL.RuleProperty(
            name="RatePerClientIp",
            priority=0,
            action=over_limit if block else wafv2.CfnWebACL.RuleActionProperty(count={}),
            statement=wafv2.CfnWebACL.StatementProperty(
                rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                    aggregate_key_type="IP", limit=self.rate_limit, evaluation_window_sec=RATE_WINDOW_SECONDS
                )
            ),
            visibility_config=_visibility(f"{name}-rate"),
        )

    @staticmethod
    def _managed_rules(name: str, block: bool) -> list[wafv2.CfnWebACL.RuleProperty]:
        return [
            wafv2.CfnWebACL.RuleProperty(
                name=group,
                priority=priority,
                override_action=wafv2.CfnWebACL.OverrideActionProperty(**({"none": {}} if block else {"count": {}})),
                statement=wafv2.CfnWebACL.StatementProperty(
                    managed_rule_group_statement=wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(
                        vendor_name="AWS",
                        name=group,
                        rule_action_overrides=[
                            wafv2.CfnWebACL.RuleActionOverrideProperty(
                                name=rule, action_to_use=wafv2.CfnWebACL.RuleActionProperty(count={})
                            )
                            for rule in COUNTED_MANAGED_RULES.get(group, [])
                        ]
                        or None,
                    )
                ),
                visibility_config=_visibility(f"{name}-{group}"),
            )
            for priority, group in enumerate(MANAGED_RULE_GROUPS, start=1)
        ]


def protect_load_balancer(scope: Construct, props: WebAclProps, *, enabled: bool, what: str) -> WebAclConstruct | None:
    """The web ACL "Waf" under `scope` in front of a public load balancer, unless `enabled` is False: the
    operator's own WAF, gateway or CDN fronts it (acknowledged, with a synth warning naming `what`)."""
    if enabled:
        return WebAclConstruct(scope, "Waf", props)
    acknowledge(
        props.load_balancer,
        "NIST.800.53.R5-ALBWAFEnabled",
        "waf=off: the operator fronts the load balancer with their own WAF, gateway or CDN",
    )
    cdk.Annotations.of(props.load_balancer).add_warning(
        f"{what}: waf=off, so no WAF web ACL (managed rules, per-client rate limit) "
        f"protects the public load balancer; front it with your own."
    )
    return None


def _visibility(metric_name: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
    return wafv2.CfnWebACL.VisibilityConfigProperty(
        cloud_watch_metrics_enabled=True, metric_name=metric_name, sampled_requests_enabled=True
    )
