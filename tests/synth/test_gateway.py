"""The gateway stack: one public load balancer with the WAF in front of the gateway's Fargate tasks,
the models' load balancers internal and reached from the gateway alone, the usage database and the
rate-limit cache encrypted, backed up and closed to everyone else, a task role that reads the key
hashes and invokes the fleet's endpoints only, alarms and a dashboard. Without the gateway, nothing
of it exists and the models keep their public load balancers."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from aws_cdk.assertions import Template

from llmfleet.model_store.gateway.consumers import ConsumersFile
from llmfleet.model_store.planning.edge import gateway_client_rate_limit, RATE_WINDOW_SECONDS
from llmfleet.model_store.contract.front_door import client_paths
from llmfleet.model_store.gateway.config import GatewayConfig
from llmfleet.model_store.gateway.contract import (
    CONFIG_ENV,
    DB_SECRET_FIELDS,
    GATEWAY_HEALTH_PATH,
    gateway_keys_secret_name,
    GATEWAY_HOST_ENV,
    GATEWAY_PORT,
    GATEWAY_PORT_ENV,
    KEYS_SECRET_ENV,
    METRIC_NAMES,
    METRICS_NAMESPACE,
    POSTGRES_PORT,
    REDIS_PORT,
    REDIS_URL_ENV,
    SAGEMAKER_INVOKE_ACTIONS,
    UPSTREAM_HTTP_PORT,
    upstream_key_env,
)
from llmfleet.stacks.config import StackConfigError
from llmfleet.stacks.gateway import GatewayProps
from llmfleet.stacks.monitoring import USAGE_WIDGETS
from tests.synth.conftest import CERTIFICATE_ARN, Synthesized, as_list, only
from tests.synth.test_gpu_service import ecs_plans


def resources(template: Template, kind: str) -> dict[str, dict]:
    return {name: resource.get("Properties", {}) for name, resource in template.find_resources(kind).items()}


def group_id(template: Template, prefix: str) -> str:
    (name,) = [n for n in resources(template, "AWS::EC2::SecurityGroup") if n.startswith(prefix)]
    return name


def peer(reference: dict) -> str:
    """The logical id (or imported output) a security-group rule points at."""
    return reference["Fn::GetAtt"][0] if "Fn::GetAtt" in reference else reference["Fn::ImportValue"]


def test_models_behind_the_gateway_have_internal_load_balancers_without_a_waf(secure_fleet: Synthesized) -> None:
    for plan in ecs_plans(secure_fleet):
        synthesized = secure_fleet.model_template(plan.model_name)
        balancer = only(synthesized.find_resources("AWS::ElasticLoadBalancingV2::LoadBalancer"))
        assert balancer["Scheme"] == "internal"
        assert all("privateSubnet" in subnet["Fn::ImportValue"] for subnet in balancer["Subnets"])
        listener = only(synthesized.find_resources("AWS::ElasticLoadBalancingV2::Listener"))
        assert (listener["Protocol"], listener["Port"]) == ("HTTP", UPSTREAM_HTTP_PORT)
        synthesized.resource_count_is("AWS::WAFv2::WebACL", 0)
        # Nobody reaches it from the model's own stack: its only ingress is the gateway stack's rule.
        alb_group = resources(synthesized, "AWS::EC2::SecurityGroup")[group_id(synthesized, "EcsAlbSecurityGroup")]
        assert "SecurityGroupIngress" not in alb_group


def test_only_the_gateway_reaches_the_model_load_balancers_the_database_and_the_cache(
    secure_fleet: Synthesized,
) -> None:
    gateway = secure_fleet.gateway_template()
    tasks = group_id(gateway, "ServiceSecurityGroup")
    ingress = [
        (peer(r["GroupId"]), r["FromPort"], peer(r["SourceSecurityGroupId"]))
        for r in resources(gateway, "AWS::EC2::SecurityGroupIngress").values()
    ]
    into = {(target, port) for target, port, source in ingress if source == tasks}
    models = [p.model_name for p in ecs_plans(secure_fleet)]
    assert {port for _, port in into} == {UPSTREAM_HTTP_PORT, REDIS_PORT, POSTGRES_PORT, GATEWAY_PORT} - {GATEWAY_PORT}
    assert sum(port == UPSTREAM_HTTP_PORT for _, port in into) == len(models)
    assert all("EcsAlbSecurityGroup" in target for target, port in into if port == UPSTREAM_HTTP_PORT)
    # The database and the cache admit the gateway's tasks and nothing else.
    for prefix, port in (("DatabaseSecurityGroup", POSTGRES_PORT), ("CacheSecurityGroup", REDIS_PORT)):
        group = group_id(gateway, prefix)
        assert [(p, s) for t, p, s in ingress if t == group] == [(port, tasks)]
        assert "SecurityGroupIngress" not in resources(gateway, "AWS::EC2::SecurityGroup")[group]
    # The tasks: from their load balancer only; out to those three and AWS APIs (443) only.
    assert [(p, s) for t, p, s in ingress if t == tasks] == [
        (GATEWAY_PORT, group_id(gateway, "ServiceAlbSecurityGroup"))
    ]
    egress = sorted(
        r["FromPort"]
        for r in resources(gateway, "AWS::EC2::SecurityGroupEgress").values()
        if peer(r["GroupId"]) == tasks
    )
    assert egress == sorted([UPSTREAM_HTTP_PORT] * len(models) + [REDIS_PORT, POSTGRES_PORT])
    (inline,) = resources(gateway, "AWS::EC2::SecurityGroup")[tasks]["SecurityGroupEgress"]
    assert (inline["CidrIp"], inline["FromPort"], inline["ToPort"]) == ("0.0.0.0/0", 443, 443)


def test_gateway_is_the_one_public_load_balancer_with_https_the_client_paths_and_the_waf(
    secure_fleet: Synthesized,
) -> None:
    gateway = secure_fleet.gateway_template()
    ((balancer_id, balancer),) = gateway.find_resources("AWS::ElasticLoadBalancingV2::LoadBalancer").items()
    assert balancer["Properties"]["Scheme"] == "internet-facing"
    attributes = {a["Key"]: a["Value"] for a in balancer["Properties"]["LoadBalancerAttributes"]}
    assert attributes["deletion_protection.enabled"] == "true" and attributes["access_logs.s3.prefix"] == "alb/gateway"
    listener = only(gateway.find_resources("AWS::ElasticLoadBalancingV2::Listener"))
    assert (listener["Protocol"], listener["Port"], listener["Certificates"]) == (
        "HTTPS",
        443,
        [{"CertificateArn": CERTIFICATE_ARN}],
    )
    assert listener["DefaultActions"][0]["FixedResponseConfig"]["StatusCode"] == "403"
    forwarded = [
        path
        for rule in resources(gateway, "AWS::ElasticLoadBalancingV2::ListenerRule").values()
        for path in rule["Conditions"][0]["PathPatternConfig"]["Values"]
    ]
    assert sorted(forwarded) == sorted({p for plan in secure_fleet.fleet.plans for p in client_paths(plan.kind)})
    group = only(gateway.find_resources("AWS::ElasticLoadBalancingV2::TargetGroup"))
    assert (group["Port"], group["HealthCheckPath"], group["TargetType"]) == (GATEWAY_PORT, GATEWAY_HEALTH_PATH, "ip")
    ((acl_id, acl),) = gateway.find_resources("AWS::WAFv2::WebACL").items()
    association = only(gateway.find_resources("AWS::WAFv2::WebACLAssociation"))
    assert association["ResourceArn"] == {"Ref": balancer_id} and association["WebACLArn"] == {
        "Fn::GetAtt": [acl_id, "Arn"]
    }
    (rate,) = [r for r in acl["Properties"]["Rules"] if r["Name"] == "RatePerClientIp"]
    sizing = secure_fleet.fleet.construct.gateway.service.sizing
    assert rate["Statement"]["RateBasedStatement"] == {
        "AggregateKeyType": "IP",
        "Limit": gateway_client_rate_limit(sizing),
        "EvaluationWindowSec": RATE_WINDOW_SECONDS,
    }
    assert (
        len(secure_fleet.template(secure_fleet.fleet.base).find_resources("AWS::ElasticLoadBalancingV2::LoadBalancer"))
        == 0
    )


def gateway_container(synth: Synthesized) -> dict:
    task = only(synth.gateway_template().find_resources("AWS::ECS::TaskDefinition"))
    (container,) = task["ContainerDefinitions"]
    return {**container, "task": task}


def test_task_gets_its_config_redis_url_and_key_secret_name_and_every_credential_as_an_ecs_secret(
    secure_fleet: Synthesized,
) -> None:
    container = gateway_container(secure_fleet)
    environment = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert set(environment) == {CONFIG_ENV, KEYS_SECRET_ENV, REDIS_URL_ENV}
    # The config is the generator's JSON with the load balancers' names as CDK tokens inside.
    parts = environment[CONFIG_ENV]["Fn::Join"][1]
    text = "".join(part if isinstance(part, str) else "lb.internal" for part in parts)
    config = GatewayConfig.from_json(text)
    assert set(config.upstreams) == {plan.model_name for plan in secure_fleet.fleet.plans}
    for plan in ecs_plans(secure_fleet):
        assert config.upstreams[plan.model_name].base_url == "http://lb.internal/v1"
    redis = environment[REDIS_URL_ENV]["Fn::Join"][1]
    assert redis[0] == "rediss://" and redis[2] == ":"
    secrets = {s["Name"] for s in container["Secrets"]}
    assert secrets == set(DB_SECRET_FIELDS) | {upstream_key_env(p.model_name) for p in ecs_plans(secure_fleet)}
    assert container["ReadonlyRootFilesystem"] is True and container["PortMappings"][0]["ContainerPort"] == GATEWAY_PORT
    task = container["task"]
    assert task["RequiresCompatibilities"] == ["FARGATE"] and task["NetworkMode"] == "awsvpc"


def contract_env_read_by_the_container() -> set[str]:
    """The values of the contract's *_ENV constants that the gateway container's modules import."""
    from llmfleet.model_store.gateway import contract as gateway_contract

    names = set()
    for module in (Path(__file__).resolve().parents[2] / "containers" / "gateway").glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == gateway_contract.__name__:
                names |= {alias.name for alias in node.names if alias.name.endswith("_ENV")}
    return {getattr(gateway_contract, name) for name in names}


def test_task_environment_names_are_exactly_those_the_container_reads(secure_fleet: Synthesized) -> None:
    container = gateway_container(secure_fleet)
    given = {e["Name"] for e in container["Environment"]} | {s["Name"] for s in container["Secrets"]}
    upstream_keys = {upstream_key_env(p.model_name) for p in ecs_plans(secure_fleet)}
    # The listening address and port have the task's values as defaults; the local fleet sets them.
    read = contract_env_read_by_the_container() - {GATEWAY_HOST_ENV, GATEWAY_PORT_ENV}
    assert read and given - upstream_keys == read


def role_statements(template: Template, role_ref: dict) -> list[dict]:
    policies = template.find_resources("AWS::IAM::Policy", {"Properties": {"Roles": [role_ref]}})
    return [s for p in policies.values() for s in p["Properties"]["PolicyDocument"]["Statement"]]


def test_task_role_reads_only_the_key_hashes_and_invokes_only_the_fleets_endpoints(secure_fleet: Synthesized) -> None:
    gateway = secure_fleet.gateway_template()
    task = gateway_container(secure_fleet)["task"]
    statements = role_statements(gateway, {"Ref": task["TaskRoleArn"]["Fn::GetAtt"][0]})
    actions = sorted(a for s in statements for a in as_list(s["Action"]))
    assert actions == sorted(["secretsmanager:GetSecretValue", *SAGEMAKER_INVOKE_ACTIONS])
    (keys,) = [s for s in statements if s["Action"] == "secretsmanager:GetSecretValue"]
    (secret_id,) = gateway.find_resources(
        "AWS::SecretsManager::Secret", {"Properties": {"Name": gateway_keys_secret_name("demo", "prod")}}
    )
    assert keys["Resource"] == {"Ref": secret_id}
    # The secret's key (in this stack) lets the task role decrypt, through Secrets Manager only.
    key = only(gateway.find_resources("AWS::KMS::Key"))
    role = {"Fn::GetAtt": [task["TaskRoleArn"]["Fn::GetAtt"][0], "Arn"]}
    granted = [s for s in key["KeyPolicy"]["Statement"] if role in as_list(s["Principal"].get("AWS"))]
    assert [(s["Action"], s["Condition"]) for s in granted] == [
        (
            "kms:Decrypt",
            {"StringEquals": {"kms:ViaService": f"secretsmanager.{secure_fleet.fleet.manifest.region}.amazonaws.com"}},
        )
    ]
    (invoke,) = [s for s in statements if s["Action"] == list(SAGEMAKER_INVOKE_ACTIONS)]
    # Only SageMaker-only models are routed to their endpoint: those the role may invoke, by name.
    sagemaker_only = [p for p in secure_fleet.fleet.plans if p.targets == ["sagemaker"]]
    endpoints = sorted(json.dumps(r) for r in as_list(invoke["Resource"]))
    assert len(endpoints) == len(sagemaker_only) >= 1
    for plan, arn in zip(sorted(sagemaker_only, key=lambda p: p.model_name), endpoints):
        assert f":endpoint/{plan.fleet}-{plan.stage}-{plan.model_name}" in arn and "*" not in arn


def test_database_is_aurora_serverless_postgres_encrypted_tls_only_backed_up_and_protected(
    secure_fleet: Synthesized,
) -> None:
    gateway = secure_fleet.gateway_template()
    ((cluster_id, cluster),) = gateway.find_resources("AWS::RDS::DBCluster").items()
    properties = cluster["Properties"]
    assert properties["Engine"] == "aurora-postgresql" and properties["Port"] == POSTGRES_PORT
    assert properties["StorageEncrypted"] is True and "KmsKeyId" in properties
    assert properties["DeletionProtection"] is True and properties["BackupRetentionPeriod"] >= 7
    assert cluster["DeletionPolicy"] == cluster["UpdateReplacePolicy"] == "Snapshot"
    assert properties["ServerlessV2ScalingConfiguration"] == {"MinCapacity": 0.5, "MaxCapacity": 4}
    assert properties["EnableIAMDatabaseAuthentication"] is True and properties["EnableCloudwatchLogsExports"] == [
        "postgresql"
    ]
    parameters = only(gateway.find_resources("AWS::RDS::DBClusterParameterGroup"))
    assert parameters["Parameters"] == {"rds.force_ssl": "1"}
    instances = resources(gateway, "AWS::RDS::DBInstance").values()
    assert len(instances) == 2 and all(
        i["DBInstanceClass"] == "db.serverless" and i["PubliclyAccessible"] is False for i in instances
    )
    secret = only(gateway.find_resources("AWS::SecretsManager::SecretTargetAttachment"))
    assert secret["TargetId"] == {"Ref": cluster_id}


def test_cache_is_valkey_encrypted_at_rest_and_in_transit_across_two_azs_with_snapshots(
    secure_fleet: Synthesized,
) -> None:
    group = only(secure_fleet.gateway_template().find_resources("AWS::ElastiCache::ReplicationGroup"))
    assert group["Engine"] == "valkey" and group["Port"] == REDIS_PORT
    assert (
        group["AtRestEncryptionEnabled"] is True and "KmsKeyId" in group and group["TransitEncryptionEnabled"] is True
    )
    assert (
        group["NumCacheClusters"] == 2 and group["MultiAZEnabled"] is True and group["AutomaticFailoverEnabled"] is True
    )
    assert group["SnapshotRetentionLimit"] >= 7
    assert (
        re.fullmatch(r"[a-z][a-z0-9-]{0,39}", group["ReplicationGroupId"]) and "--" not in group["ReplicationGroupId"]
    )


def test_alarms_notify_the_topic_and_the_dashboard_shows_usage_per_consumer(secure_fleet: Synthesized) -> None:
    gateway = secure_fleet.gateway_template()
    alarms = gateway.find_resources("AWS::CloudWatch::Alarm")
    names = {re.sub(r"[A-F0-9]{8}$", "", name).removeprefix("Monitoring") for name in alarms}
    expected = {
        "Gateway5xxRate",
        "GatewayTasksBelowMinimum",
        "GatewayCpu",
        "DatabaseCpu",
        "DatabaseConnections",
        "CacheCpu",
        "CacheConnections",
        "CacheEvictions",
    }
    assert names == expected
    for alarm in alarms.values():
        assert (
            alarm["Properties"]["AlarmActions"] == alarm["Properties"]["OKActions"]
            and len(alarm["Properties"]["AlarmActions"]) == 1
        )
    (tasks,) = [a["Properties"] for n, a in alarms.items() if "GatewayTasksBelowMinimum" in n]
    assert tasks["ComparisonOperator"] == "LessThanThreshold" and tasks["TreatMissingData"] == "breaching"
    assert tasks["Threshold"] == secure_fleet.fleet.construct.gateway.service.sizing.min_tasks
    body = json.dumps(only(gateway.find_resources("AWS::CloudWatch::Dashboard"))["DashboardBody"])
    assert {metric for _, metric, _ in USAGE_WIDGETS} == set(METRIC_NAMES)
    fleet, stage = secure_fleet.fleet.plans[0].fleet, secure_fleet.fleet.plans[0].stage
    quote = '\\\\\\"'  # a " inside the expression inside the dashboard's JSON inside this JSON dump
    for metric in METRIC_NAMES:
        expected = (f"SEARCH('{{{METRICS_NAMESPACE},Fleet,Stage,Consumer,Model}} Fleet={quote}{fleet}{quote} "
                    f"Stage={quote}{stage}{quote} MetricName={quote}{metric}{quote}'")
        assert expected in body, metric


def test_without_the_gateway_the_models_keep_public_load_balancers_and_no_gateway_is_made(
    public_fleet: Synthesized,
) -> None:
    assert public_fleet.fleet.gateway is None and public_fleet.fleet.construct.gateway is None
    assert not list(public_fleet.outdir.glob("*-gateway.template.json"))
    for plan in ecs_plans(public_fleet):
        synthesized = public_fleet.model_template(plan.model_name)
        assert (
            only(synthesized.find_resources("AWS::ElasticLoadBalancingV2::LoadBalancer"))["Scheme"] == "internet-facing"
        )
        synthesized.resource_count_is("AWS::WAFv2::WebACL", 1)


def test_props_refuse_a_manifest_with_the_gateway_off_and_public_models(
    secure_fleet: Synthesized, public_fleet: Synthesized
) -> None:
    construct = secure_fleet.fleet.construct
    given = dict(
        manifest=secure_fleet.fleet.manifest,
        consumers=ConsumersFile(),
        plans=construct.plans,
        models=construct.models,
        vpc=construct.vpc,
        key=construct.store.key,
        access_logs=construct.store.access_logs,
        topic=construct.alarm_topic,
        image_uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/acme/gateway:1.0",
    )
    off = secure_fleet.fleet.manifest.model_copy(
        update={"gateway": secure_fleet.fleet.manifest.gateway.model_copy(update={"enabled": False})}
    )
    with pytest.raises(StackConfigError, match="gateway.enabled false"):
        GatewayProps(**{**given, "manifest": off})
    with pytest.raises(StackConfigError, match=r"have public load balancers; behind the gateway they must be internal"):
        GatewayProps(**{**given, "models": public_fleet.fleet.construct.models})
    with pytest.raises(StackConfigError, match="is not pinned by digest|pinned by digest"):
        GatewayProps(**{**given, "image_uri": None, "base_image": "python:3.11-slim"})
    with pytest.raises(StackConfigError, match="is not an ECR image URI"):
        GatewayProps(**{**given, "image_uri": "docker.io/acme/gateway:1.0"})
