"""`llmfleet status` against an AWS account: ECS services, load-balancer target health,
SageMaker endpoints, each model's adapter registry and the container's CloudWatch metrics,
found by the tags the stacks put on them, turned into model_store.ops.status rows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import boto3

from llmfleet.model_store.contract import telemetry
from llmfleet.model_store.contract.plan import ServingPlan
from llmfleet.model_store.store.registry import AdapterRegistry, adapters_for_server, RegistryState
from llmfleet.model_store.ops.status import (
    Deployment,
    Metrics,
    metrics_from_cloudwatch,
    model_status,
    ModelStatus,
    promoted_versions,
    ServerAdapters,
    TAG_MODEL,
    TAG_STAGE,
    unit_cost_per_hour,
)
from llmfleet.model_store.store.store import ModelStore, StoreError, StoreLocation
from llmfleet.model_store.contract.targets import ECS, SAGEMAKER

# Status fields read from the container's EMF metrics (model_store/contract/telemetry.py).
CLOUDWATCH_METRICS = {
    "queue_depth": telemetry.REQUESTS_WAITING,
    "running_requests": telemetry.REQUESTS_RUNNING,
    "ttft_p50_ms": telemetry.quantile_metric(telemetry.TTFT_PREFIX, 50),
    "latency_p50_ms": telemetry.quantile_metric(telemetry.E2E_LATENCY_PREFIX, 50),
    "latency_p99_ms": telemetry.quantile_metric(telemetry.E2E_LATENCY_PREFIX, 99),
}
METRICS_WINDOW = timedelta(minutes=15)
# A server starts once and then serves for days: its boot figure is looked for further back.
BOOT_WINDOW = timedelta(days=7)
BOOT_PERIOD_SECONDS = 3600


def _tags(pairs: list[dict], key: str = "Key", value: str = "Value") -> dict[str, str]:
    return {pair[key]: pair[value] for pair in pairs}


def aws_status_rows(
    plans: list[ServingPlan], stage: str, session: boto3.Session, *, warn: Callable[[str], None] = lambda _: None
) -> list[ModelStatus]:
    """ECS services, ALB target health, SageMaker endpoints and the container's CloudWatch metrics;
    `warn` hears of what could not be read (a registry), which leaves that part empty."""
    wanted = {plan.model_name: plan for plan in plans}
    ecs, elbv2, sagemaker = session.client("ecs"), session.client("elbv2"), session.client("sagemaker")
    healthy = _healthy_targets(elbv2, stage)
    registry_of = _registries(plans, stage, session, warn)
    rows = []
    clusters = [arn for page in ecs.get_paginator("list_clusters").paginate() for arn in page["clusterArns"]]
    for cluster in clusters:
        arns = [arn for page in ecs.get_paginator("list_services").paginate(cluster=cluster) for arn in page["serviceArns"]]
        for start in range(0, len(arns), 10):  # DescribeServices takes 10 at a time
            for service in ecs.describe_services(cluster=cluster, services=arns[start : start + 10], include=["TAGS"])["services"]:
                tags = _tags(service.get("tags", []), "key", "value")
                plan = wanted.get(tags.get(TAG_MODEL, ""))
                if plan is None or tags.get(TAG_STAGE, stage) != stage:
                    continue
                pages = ecs.get_paginator("list_tasks").paginate(cluster=cluster, serviceName=service["serviceName"])
                tasks = [arn for page in pages for arn in page["taskArns"]]
                deployment = Deployment(
                    ECS.name,
                    service["serviceName"],
                    desired=service["desiredCount"],
                    running=service["runningCount"],
                    pending=service.get("pendingCount", 0),
                    instance_type=plan.instance_type,
                    healthy=healthy.get(plan.model_name),
                    state=service.get("status"),
                )
                rows.append(_aws_row(plan, stage, deployment, [t.rsplit("/", 1)[-1] for t in tasks], registry_of, session))
    for page in sagemaker.get_paginator("list_endpoints").paginate():
        for summary in page["Endpoints"]:
            tags = _tags(sagemaker.list_tags(ResourceArn=summary["EndpointArn"])["Tags"])
            plan = wanted.get(tags.get(TAG_MODEL, ""))
            if plan is None or tags.get(TAG_STAGE, stage) != stage:
                continue
            endpoint = sagemaker.describe_endpoint(EndpointName=summary["EndpointName"])
            variants = endpoint.get("ProductionVariants", [])
            deployment = Deployment(
                SAGEMAKER.name,
                endpoint["EndpointName"],
                desired=sum(v.get("DesiredInstanceCount", 0) for v in variants),
                running=sum(v.get("CurrentInstanceCount", 0) for v in variants),
                instance_type=plan.sagemaker_instance_type or plan.instance_type,
                state=endpoint["EndpointStatus"],
            )
            rows.append(_aws_row(plan, stage, deployment, [], registry_of, session))
    return rows


def _aws_row(
    plan: ServingPlan,
    stage: str,
    deployment: Deployment,
    server_ids: list[str],
    registry_of: Callable[[str], RegistryState],
    session: boto3.Session,
) -> ModelStatus:
    registry = registry_of(plan.model_name)
    # Servers sit in private subnets: what each has loaded is not reachable from here, so a
    # row shows what the registry assigns it (its AdaptersLoaded metric counts what it has).
    unreachable = "in a private subnet; showing what the registry assigns it"
    servers = [ServerAdapters(server_id, error=unreachable) for server_id in server_ids]
    return model_status(
        model=plan.model_name,
        stage=stage,
        deployment=deployment,
        unit_cost_per_hour_usd=unit_cost_per_hour(plan, deployment.target),
        promoted=promoted_versions(registry),
        servers=servers,
        expected={server_id: adapters_for_server(registry, server_id) for server_id in server_ids},
        metrics=_cloudwatch_metrics(session.client("cloudwatch"), plan.model_name, stage, deployment.target),
    )


def _healthy_targets(elbv2, stage: str) -> dict[str, int]:
    """Healthy ALB targets per model, from target groups tagged with the model."""
    groups = [g for page in elbv2.get_paginator("describe_target_groups").paginate() for g in page["TargetGroups"]]
    healthy: dict[str, int] = {}
    for start in range(0, len(groups), 20):  # DescribeTags takes 20 ARNs at a time
        batch = groups[start : start + 20]
        described = elbv2.describe_tags(ResourceArns=[g["TargetGroupArn"] for g in batch])["TagDescriptions"]
        for description in described:
            tags = _tags(description["Tags"])
            if TAG_MODEL not in tags or tags.get(TAG_STAGE, stage) != stage:
                continue
            targets = elbv2.describe_target_health(TargetGroupArn=description["ResourceArn"])["TargetHealthDescriptions"]
            count = sum(1 for t in targets if t["TargetHealth"]["State"] == "healthy")
            healthy[tags[TAG_MODEL]] = healthy.get(tags[TAG_MODEL], 0) + count
    return healthy


def _registries(plans: list[ServingPlan], stage: str, session: boto3.Session, warn: Callable[[str], None]) -> Callable[[str], RegistryState]:
    """model -> registry state, read from each model's store (empty when it cannot be read)."""
    stores: dict[str, ModelStore] = {}
    client = session.client("s3")

    def registry(model: str) -> RegistryState:
        uri = next(p for p in plans if p.model_name == model).store_uri
        if uri is None:
            warn(f"registry of {model}: its source is a local directory, not a store")
            return RegistryState.empty(model, stage)
        store = stores.setdefault(uri, ModelStore(StoreLocation.parse(uri), client))
        try:
            return AdapterRegistry(store).state(model, stage)
        except StoreError as exc:
            warn(f"registry of {model} unreadable: {exc}")
            return RegistryState.empty(model, stage)

    return registry


def _cloudwatch_metrics(cloudwatch, model: str, stage: str, target: str) -> Metrics:
    """The newest value of each container metric of one target over the last METRICS_WINDOW,
    and the newest start's total boot time over the last BOOT_WINDOW."""
    dimensions = [{"Name": k, "Value": v} for k, v in telemetry.dimensions(model, stage, target).items()]
    now = datetime.now(UTC)

    def query(metric_id: str, name: str, dims: list[dict], period: int, stat: str) -> dict:
        metric = {"Namespace": telemetry.NAMESPACE, "MetricName": name, "Dimensions": dims}
        return {"Id": metric_id, "MetricStat": {"Metric": metric, "Period": period, "Stat": stat}}

    def newest(queries: list[dict], window: timedelta) -> dict[str, float | None]:
        # EndTime a period ahead: the newest datapoint (seconds old) falls inside the window.
        results = cloudwatch.get_metric_data(
            MetricDataQueries=queries, StartTime=now - window, EndTime=now + timedelta(minutes=1)
        )["MetricDataResults"]
        return {r["Id"]: max(zip(r["Timestamps"], r["Values"]))[1] if r["Values"] else None for r in results}

    latest = newest(
        [query(f"m{index}", name, dimensions, 60, "Average") for index, name in enumerate(CLOUDWATCH_METRICS.values())],
        METRICS_WINDOW,
    )
    total = [*dimensions, {"Name": telemetry.PHASE_DIMENSION, "Value": "total"}]
    latest |= newest([query("boot", telemetry.BOOT_SECONDS, total, BOOT_PERIOD_SECONDS, "Maximum")], BOOT_WINDOW)
    names = {field: f"m{index}" for index, field in enumerate(CLOUDWATCH_METRICS)}
    return metrics_from_cloudwatch(latest, {**names, "last_boot_seconds": "boot"})
