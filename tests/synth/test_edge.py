"""Every public load balancer sits behind a WAF web ACL whose rate limit comes from the plan (the models'
without a gateway; the gateway's: tests/synth/test_gateway.py)."""

from __future__ import annotations

import json
from pathlib import Path

import aws_cdk as cdk
from aws_cdk.assertions import Annotations, Match

from llmfleet.model_store.planning.edge import client_rate_limit, RATE_WINDOW_SECONDS
from llmfleet.stacks.fleet import compose_fleet
from tests.synth.conftest import Synthesized, cdk_json_context, fleet_without_gateway, only
from tests.synth.test_gpu_service import ecs_plans


def rules_by_name(web_acl: dict) -> dict[str, dict]:
    return {rule["Name"]: rule for rule in web_acl["Rules"]}


def test_each_public_load_balancer_is_associated_with_its_web_acl(public_fleet: Synthesized) -> None:
    for plan in ecs_plans(public_fleet):
        synthesized = public_fleet.model_template(plan.model_name)
        (balancer_id,) = synthesized.find_resources("AWS::ElasticLoadBalancingV2::LoadBalancer")
        (acl_id,) = synthesized.find_resources("AWS::WAFv2::WebACL")
        association = only(synthesized.find_resources("AWS::WAFv2::WebACLAssociation"))
        assert association["ResourceArn"] == {"Ref": balancer_id}
        assert association["WebACLArn"] == {"Fn::GetAtt": [acl_id, "Arn"]}


def test_rate_rule_blocks_one_client_over_the_plans_capacity_with_a_429(public_fleet: Synthesized) -> None:
    for plan in ecs_plans(public_fleet):
        web_acl = only(public_fleet.model_template(plan.model_name).find_resources("AWS::WAFv2::WebACL"))
        assert web_acl["Scope"] == "REGIONAL" and web_acl["DefaultAction"] == {"Allow": {}}
        rate = rules_by_name(web_acl)["RatePerClientIp"]
        assert rate["Priority"] == 0
        assert rate["Statement"]["RateBasedStatement"] == {
            "AggregateKeyType": "IP",
            "Limit": client_rate_limit(plan),
            "EvaluationWindowSec": RATE_WINDOW_SECONDS,
        }
        response = rate["Action"]["Block"]["CustomResponse"]
        assert response["ResponseCode"] == 429
        assert response["ResponseHeaders"] == [{"Name": "Retry-After", "Value": str(RATE_WINDOW_SECONDS)}]
        body = web_acl["CustomResponseBodies"][response["CustomResponseBodyKey"]]
        assert body["ContentType"] == "APPLICATION_JSON"
        assert json.loads(body["Content"])["error"]["code"] == 429


def test_managed_rule_groups_block_but_long_prompts_pass(public_fleet: Synthesized) -> None:
    for plan in ecs_plans(public_fleet):
        rules = rules_by_name(only(public_fleet.model_template(plan.model_name).find_resources("AWS::WAFv2::WebACL")))
        for group in ("AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet", "AWSManagedRulesAmazonIpReputationList"):
            assert rules[group]["OverrideAction"] == {"None": {}}, group
            assert rules[group]["Statement"]["ManagedRuleGroupStatement"]["VendorName"] == "AWS"
        overrides = rules["AWSManagedRulesCommonRuleSet"]["Statement"]["ManagedRuleGroupStatement"]["RuleActionOverrides"]
        assert overrides == [{"Name": "SizeRestrictions_BODY", "ActionToUse": {"Count": {}}}]


def test_waf_logs_to_a_retained_encrypted_log_group_without_the_api_key(public_fleet: Synthesized) -> None:
    for plan in ecs_plans(public_fleet):
        synthesized = public_fleet.model_template(plan.model_name)
        (acl_id,) = synthesized.find_resources("AWS::WAFv2::WebACL")
        logging = only(synthesized.find_resources("AWS::WAFv2::LoggingConfiguration"))
        assert logging["ResourceArn"] == {"Fn::GetAtt": [acl_id, "Arn"]}
        assert logging["RedactedFields"] == [{"SingleHeader": {"Name": "authorization"}}]
        name = f"aws-waf-logs-llmfleet-{plan.fleet}-{plan.stage}-{plan.model_name}"
        groups = synthesized.find_resources("AWS::Logs::LogGroup", {"Properties": {"LogGroupName": name}})
        ((group_id, group),) = groups.items()
        assert group["Properties"]["RetentionInDays"] == 90 and "KmsKeyId" in group["Properties"]
        (destination,) = logging["LogDestinationConfigs"]
        # WAF takes the ARN without the `:*` suffix that log_group_arn would carry.
        assert destination["Fn::Join"][1][-2:] == [":log-group:", {"Ref": group_id}]


def test_count_mode_and_waf_off_with_a_warning_still_pass_both_nag_packs(tmp_path: Path) -> None:
    fleet_path = str(fleet_without_gateway(tmp_path))
    app = cdk.App(context=cdk_json_context(waf_mode="count", fleet=fleet_path), outdir=str(tmp_path / "count"))
    fleet = compose_fleet(app)
    app.synth()
    model = next(name for name, serving in fleet.construct.models.items() if serving.gpu_service is not None)
    web_acl = only(cdk.assertions.Template.from_stack(fleet.models[model]).find_resources("AWS::WAFv2::WebACL"))
    assert all("Count" in r.get("Action", {}) or "Count" in r.get("OverrideAction", {}) for r in web_acl["Rules"])

    context = cdk_json_context(waf="off", deletion_protection="off", fleet=fleet_path)
    app = cdk.App(context=context, outdir=str(tmp_path / "off"))
    fleet = compose_fleet(app)
    app.synth()
    model = next(name for name, serving in fleet.construct.models.items() if serving.gpu_service is not None)
    assert fleet.construct.models[model].web_acl is None
    template = cdk.assertions.Template.from_stack(fleet.models[model])
    template.resource_count_is("AWS::WAFv2::WebACL", 0)
    balancer = only(template.find_resources("AWS::ElasticLoadBalancingV2::LoadBalancer"))
    assert {"Key": "deletion_protection.enabled", "Value": "false"} in balancer["LoadBalancerAttributes"]
    Annotations.from_stack(fleet.models[model]).has_warning("*", Match.string_like_regexp("waf=off, so no WAF web ACL"))
