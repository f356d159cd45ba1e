"""`llmfleet status` against an AWS account emulated by moto's server over HTTP.

The account holds what the stacks create for one model (tagged `llmfleet:model` and
`llmfleet:stage`): an ECS service, an ALB target group, a SageMaker endpoint, the
container's CloudWatch metrics and the adapter registry in the store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest

from llmfleet.model_store.store.registry import AdapterRegistry, adapters_for_server
from llmfleet.model_store.ops.status import unit_cost_per_hour
from llmfleet.model_store.contract import telemetry
from llmfleet.model_store.store.store import ModelStore
from llmfleet.scripts.cli_common import load_and_plan
from llmfleet.model_store.ops.aws_status import aws_status_rows
from tests.integration.conftest import write_adapter, write_model

REPO = Path(__file__).resolve().parents[2]
LLMFLEET = str(Path(sys.executable).parent / "llmfleet")  # the console script, as users run it
MODEL = "qwen3-small"


def _fleet(tmp_path: Path, bucket: str, stage: str) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(
        f"""
name: demo
stage: {stage}
models:
  - name: {MODEL}
    source: s3://{bucket}/models/{MODEL}
    architecture: Qwen/Qwen3-0.6B
    max_model_len: 8192
    lora: {{max_rank: 16, adapters: [{{name: medical}}]}}
    serving: {{targets: [ecs, sagemaker], max_capacity: 4}}
  - name: other
    source: s3://{bucket}/models/other
    architecture: Qwen/Qwen3-0.6B
"""
    )
    return path


@pytest.fixture
def account(aws_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """One model deployed on ECS (2 tasks behind a target group) and SageMaker, with metrics and a registry."""
    monkeypatch.setenv("MOTO_ECS_SERVICE_RUNNING", "2")  # moto reads it when the service is created
    # Its own stage per test: the session's moto server keeps earlier tests' resources, and
    # status selects by the `llmfleet:stage` tag, as in a shared account.
    stage = f"t{uuid.uuid4().hex[:8]}"
    tags = [{"Key": "llmfleet:model", "Value": MODEL}, {"Key": "llmfleet:stage", "Value": stage}]
    bucket = f"llmfleet-status-{uuid.uuid4().hex[:8]}"
    region = "us-east-1"
    s3 = boto3.client("s3", region_name=region)
    s3.create_bucket(Bucket=bucket)
    store = ModelStore.from_uri(f"s3://{bucket}")
    store.upload_model(write_model(tmp_path / "model"), MODEL, "main")
    versions = [
        store.publish_adapter(write_adapter(tmp_path / f"a{seed}", base=MODEL, seed=seed), MODEL, "medical", max_rank=16).version
        for seed in (1, 2)
    ]
    registry = AdapterRegistry(store)
    registry.promote(MODEL, stage, "medical", versions[0], actor="test")
    state = registry.promote(MODEL, stage, "medical", versions[1], fraction=0.5, actor="test")

    ecs = boto3.client("ecs", region_name=region)
    cluster = f"llmfleet-demo-{uuid.uuid4().hex[:6]}"
    ecs.create_cluster(clusterName=cluster)
    ecs.register_task_definition(
        family=f"{cluster}-{MODEL}",
        containerDefinitions=[{"name": "vllm", "image": "vllm", "memory": 1024}],
        requiresCompatibilities=["EC2"],
    )
    ecs.create_service(
        cluster=cluster,
        serviceName=f"{MODEL}-svc",
        taskDefinition=f"{cluster}-{MODEL}",
        desiredCount=3,
        tags=[{"key": t["Key"], "value": t["Value"]} for t in tags],
    )
    ec2 = boto3.client("ec2", region_name=region)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    security_group = ec2.create_security_group(GroupName=f"sg-{cluster}", Description="tasks", VpcId=vpc)["GroupId"]
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="g6.xlarge", SubnetId=subnet)["Instances"][0]
    ecs.register_container_instance(
        cluster=cluster, instanceIdentityDocument=json.dumps({"instanceId": instance["InstanceId"], "region": region})
    )
    tasks = ecs.run_task(cluster=cluster, taskDefinition=f"{cluster}-{MODEL}", count=2, launchType="EC2")["tasks"]

    elbv2 = boto3.client("elbv2", region_name=region)
    group = elbv2.create_target_group(
        Name=f"tg-{uuid.uuid4().hex[:8]}", Protocol="HTTP", Port=8000, VpcId=vpc, TargetType="ip", Tags=tags
    )["TargetGroups"][0]["TargetGroupArn"]
    elbv2.register_targets(TargetGroupArn=group, Targets=[{"Id": "10.0.1.10", "Port": 8000}, {"Id": "10.0.1.11", "Port": 8000}])

    sagemaker = boto3.client("sagemaker", region_name=region)
    name = f"{MODEL}-{uuid.uuid4().hex[:6]}"
    sagemaker.create_model(
        ModelName=name,
        ExecutionRoleArn="arn:aws:iam::123456789012:role/llmfleet-sagemaker",
        PrimaryContainer={"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/llmfleet:1"},
    )
    sagemaker.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.g4dn.xlarge"}
        ],
    )
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=name, Tags=tags)

    cloudwatch = boto3.client("cloudwatch", region_name=region)
    for target, waiting in (("ecs", 3.0), ("sagemaker", 7.0)):  # each target's rows read its own series
        dimensions = dimensions_of(MODEL, stage, target)
        cloudwatch.put_metric_data(
            Namespace=telemetry.NAMESPACE,
            MetricData=[
                {"MetricName": metric, "Dimensions": dimensions, "Value": value, "Timestamp": datetime.now(UTC)}
                for metric, value in (("RequestsWaiting", waiting), ("E2ELatencyP50", 420.0), ("E2ELatencyP99", 1900.0))
            ],
        )
    # Two starts of the ECS service, days apart (the newest counts), and one phase that is not the total.
    boot = [*dimensions_of(MODEL, stage, "ecs"), {"Name": "Phase", "Value": "total"}]
    compile_phase = [*dimensions_of(MODEL, stage, "ecs"), {"Name": "Phase", "Value": "compile"}]
    cloudwatch.put_metric_data(
        Namespace=telemetry.NAMESPACE,
        MetricData=[
            {"MetricName": "BootSeconds", "Dimensions": boot, "Value": 250.0, "Timestamp": datetime.now(UTC) - timedelta(days=3)},
            {"MetricName": "BootSeconds", "Dimensions": boot, "Value": 84.0, "Timestamp": datetime.now(UTC) - timedelta(hours=5)},
            {"MetricName": "BootSeconds", "Dimensions": compile_phase, "Value": 36.0, "Timestamp": datetime.now(UTC) - timedelta(hours=5)},
        ],
    )
    return {
        "fleet": _fleet(tmp_path, bucket, stage),
        "stage": stage,
        "task_ids": sorted(t["taskArn"].rsplit("/", 1)[-1] for t in tasks),
        "registry": state,
        "versions": versions,
        "endpoint": name,
        "service": f"{MODEL}-svc",
    }


def dimensions_of(model: str, stage: str, target: str) -> list[dict[str, str]]:
    return [{"Name": k, "Value": v} for k, v in telemetry.dimensions(model, stage, target).items()]


def test_rows_report_capacity_health_adapters_metrics_and_cost(account: dict):
    _, plans = load_and_plan(account["fleet"])
    plan = plans[0]
    rows = {row.target: row for row in aws_status_rows(plans, account["stage"], boto3.Session(region_name="us-east-1"))}
    assert set(rows) == {"ecs", "sagemaker"}

    ecs = rows["ecs"]
    assert (ecs.name, ecs.desired, ecs.running, ecs.pending, ecs.healthy) == (account["service"], 3, 2, 1, 2)
    assert ecs.instance_type == plan.instance_type
    assert ecs.cost_per_hour_usd == pytest.approx(2 * unit_cost_per_hour(plan, "ecs"))
    assert ecs.promoted == {"medical": f"{account['versions'][1]} (50%, else {account['versions'][0]})"}
    assert [s.server_id for s in ecs.servers] == account["task_ids"]
    for server in ecs.servers:
        assert server.expected == adapters_for_server(account["registry"], server.server_id)
        assert server.expected["medical"] in account["versions"]
    assert (ecs.metrics.queue_depth, ecs.metrics.latency_p50_ms, ecs.metrics.latency_p99_ms) == (3.0, 420.0, 1900.0)
    assert ecs.metrics.last_boot_seconds == 84.0

    sagemaker = rows["sagemaker"]
    assert (sagemaker.name, sagemaker.desired, sagemaker.running, sagemaker.state) == (account["endpoint"], 1, 1, "InService")
    assert sagemaker.instance_type == plan.sagemaker_instance_type
    assert sagemaker.cost_per_hour_usd == pytest.approx(unit_cost_per_hour(plan, "sagemaker"))
    assert sagemaker.metrics.queue_depth == 7.0
    assert sagemaker.metrics.last_boot_seconds is None


def test_status_command_json_lists_deployed_models_and_names_the_missing(account: dict, aws_env: str):
    env = {**os.environ, "HOME": str(account["fleet"].parent)}  # no local fleet state is found from there
    result = subprocess.run(
        [LLMFLEET, "status", "--aws", "--fleet", str(account["fleet"]), "--json"],
        capture_output=True,
        text=True,
        cwd=account["fleet"].parent,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert sorted(row["target"] for row in report["models"]) == ["ecs", "sagemaker"]
    assert report["cost_per_hour_usd"] == pytest.approx(sum(row["cost_per_hour_usd"] for row in report["models"]))
    assert report["notes"] == ["no deployment found for: other"]


def test_status_without_reachable_account_fails_with_refusal(tmp_path: Path, aws_env: str):
    env = {**os.environ, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1"}
    result = subprocess.run(
        [LLMFLEET, "status", "--aws", "--fleet", str(REPO / "fleet.yaml")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert result.returncode == 1
    [line] = result.stderr.splitlines()  # what to check, not a traceback
    assert "Could not connect to the endpoint URL" in line and "AWS_ENDPOINT_URL" in line
