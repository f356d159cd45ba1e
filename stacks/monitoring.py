"""Alarm topic for the fleet, and a dashboard plus alarms per model (ECS and/or SageMaker)."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from llmfleet.model_store.gateway import contract as gateway_contract
from llmfleet.model_store.planning.image import latency_alarm_ms
from llmfleet.model_store.contract.plan import DeploymentPlan
from llmfleet.model_store.contract.telemetry import (
    E2E_LATENCY_PREFIX,
    E2E_QUANTILES,
    GENERATION_TOKENS_PER_SECOND,
    KV_CACHE_USAGE,
    quantile_metric,
    REQUESTS_RUNNING,
    REQUESTS_WAITING,
    TTFT_PREFIX,
    TTFT_QUANTILES,
)
from llmfleet.stacks import gpu_service, sagemaker_endpoint
from llmfleet.stacks.config import StackConfigError
from llmfleet.stacks.gateway_cache import GatewayCacheConstruct
from llmfleet.stacks.gateway_database import GatewayDatabaseConstruct
from llmfleet.stacks.gateway_service import GatewayServiceConstruct
from llmfleet.stacks.gpu_service import GpuServiceConstruct
from llmfleet.stacks.metrics import FIVE_MINUTES, ONE_MINUTE, fleet_metric
from llmfleet.stacks.sagemaker_endpoint import SageMakerEndpointConstruct
from llmfleet.model_store.contract.kinds import IMAGE, KINDS

# Alarm thresholds that are operational judgement, not plan figures.
ERROR_RATE_PERCENT = 5  # 5xx share of requests, three minutes running
QUEUE_ALARM_FACTOR = 4  # the queue stays at 4x the autoscaling target: scaling is not keeping up
KV_SATURATION_PERCENT = 95  # vLLM starts preempting sequences when the KV cache is full
PENDING_TASK_MINUTES = 30  # GPU capacity can be short for 10-30 min; longer needs a person
GATEWAY_CPU_PERCENT = 90  # above the scaling target (gateway_contract.CPU_TARGET_PERCENT): scaling is not keeping up
DATA_CPU_PERCENT = 80  # the database's and the cache's CPU
# Aurora PostgreSQL's max_connections at the default 4 ACU (8 GiB / 9,531,392 B) is about 900; half of it.
DATABASE_CONNECTIONS = 450
# The gateway keeps a few pooled connections per task; thousands mean a leak (a node allows 65,000).
CACHE_CONNECTIONS = 1000
# The per-consumer usage widgets: title, the gateway's EMF metric, statistic per minute.
USAGE_WIDGETS = (
    ("Requests/min per consumer and model", "Requests", "Sum"),
    ("Prompt tokens/min per consumer and model", "PromptTokens", "Sum"),
    ("Completion tokens/min per consumer and model", "CompletionTokens", "Sum"),
    ("Errors/min per consumer and model", "Errors", "Sum"),
    ("Latency (ms, p90) per consumer and model", "LatencyMs", "p90"),
)
# How alarms (ids and descriptions) name each target.
TARGET_ALARM_PREFIX = {gpu_service.TARGET: "Ecs", sagemaker_endpoint.TARGET: "SageMaker"}
TARGET_TITLE = {gpu_service.TARGET: "ECS", sagemaker_endpoint.TARGET: "SageMaker"}


@dataclass(frozen=True)
class AlarmTopicProps:
    """key: the KMS key that encrypts the topic. email: an address subscribed to every alarm
    (default None: no subscription; add one later in the console or with `-c alarm_email=`)."""

    key: kms.IKey
    email: str | None = None


class AlarmTopicConstruct(Construct):
    """KMS-encrypted, SSL-only SNS topic every alarm of the fleet notifies."""

    def __init__(self, scope: Construct, id: str, props: AlarmTopicProps) -> None:
        super().__init__(scope, id)
        self.topic = sns.Topic(self, "Topic", master_key=props.key, enforce_ssl=True)
        if props.email is not None:
            self.topic.add_subscription(subscriptions.EmailSubscription(props.email))


@dataclass(frozen=True)
class ModelMonitoringProps:
    """plan: the model's serving plan (names, thresholds). topic: where alarms notify.
    gpu_service / endpoint: the model's ECS service and SageMaker endpoint, each None (the
    default) when the model is not served on that target; at least one is required."""

    plan: DeploymentPlan
    topic: sns.ITopic
    gpu_service: GpuServiceConstruct | None = None
    endpoint: SageMakerEndpointConstruct | None = None

    def __post_init__(self) -> None:
        if self.gpu_service is None and self.endpoint is None:
            raise StackConfigError(f"ModelMonitoringProps for model {self.plan.model_name!r}: nothing to monitor")


class ModelMonitoringConstruct(Construct):
    """Dashboard (requests, 5xx, queue, KV cache, TTFT, tokens/s, hosts, instances) and alarms to SNS."""

    def __init__(self, scope: Construct, id: str, props: ModelMonitoringProps) -> None:
        super().__init__(scope, id)
        self.plan = plan = props.plan
        self.topic = props.topic
        self.alarms: dict[str, cloudwatch.Alarm] = {}
        self.deployment_alarm_names: list[str] = []

        image = KINDS[plan.kind] is IMAGE  # the image server queues images, and has no KV cache or tokens
        # Per target: each has its own servers, queue and autoscaling.
        for target in plan.targets:
            prefix, where = TARGET_ALARM_PREFIX[target], f"{plan.model_name} on {TARGET_TITLE[target]}"
            self._alarm(
                f"{prefix}QueueDepth",
                f"{where}: more than {plan.autoscaling.target_queue_depth * QUEUE_ALARM_FACTOR:g} {'images' if image else 'requests'} "
                f"wait per server for 15 minutes (autoscaling is not keeping up or is at max_capacity)",
                fleet_metric(plan, REQUESTS_WAITING, target, period=FIVE_MINUTES),
                plan.autoscaling.target_queue_depth * QUEUE_ALARM_FACTOR,
                evaluation_periods=3,
            )
            if image:
                self._alarm(
                    f"{prefix}ImageLatency",
                    f"{where}: p99 request latency above {latency_alarm_ms(plan) / 1000:g} s for 15 minutes "
                    f"(images queue behind full batches of {plan.image.max_batch}, or the GPU is slower than planned)",
                    fleet_metric(plan, quantile_metric(E2E_LATENCY_PREFIX, 99), target, statistic="Maximum", period=FIVE_MINUTES),
                    latency_alarm_ms(plan),
                    evaluation_periods=3,
                )
                continue
            self._alarm(
                f"{prefix}KvCacheSaturation",
                f"{where}: KV cache above {KV_SATURATION_PERCENT}% for 10 minutes (vLLM preempts sequences)",
                fleet_metric(plan, KV_CACHE_USAGE, target, period=FIVE_MINUTES),
                KV_SATURATION_PERCENT,
                evaluation_periods=2,
            )
        widgets: list[cloudwatch.IWidget] = [
            cloudwatch.TextWidget(markdown=f"# {plan.model_name} ({plan.stage})  \n{', '.join(plan.targets)}", width=24, height=2)
        ]
        if props.gpu_service is not None:
            widgets += self._ecs(props.gpu_service)
        if props.endpoint is not None:
            widgets += self._sagemaker(props.endpoint)

        def per_target(*names: str) -> list[cloudwatch.IMetric]:
            """One line per metric and target, labelled with the target."""
            return [
                fleet_metric(plan, name, target).with_(label=f"{name} ({target})")
                for name in names
                for target in plan.targets
            ]

        latency = graph("End-to-end latency (ms)", per_target(*(quantile_metric(E2E_LATENCY_PREFIX, q) for q in E2E_QUANTILES)))
        if image:
            widgets += [graph("Images waiting and generating per server", per_target(REQUESTS_WAITING, REQUESTS_RUNNING)), latency]
            self.dashboard = cloudwatch.Dashboard(self, "Dashboard", widgets=[widgets])
            return
        widgets += [
            graph("Queue depth per server", per_target(REQUESTS_WAITING, REQUESTS_RUNNING)),
            graph("KV-cache usage %", per_target(KV_CACHE_USAGE)),
            graph("Time to first token (ms)", per_target(*(quantile_metric(TTFT_PREFIX, q) for q in TTFT_QUANTILES))),
            latency,
            graph("Generated tokens/s per server", per_target(GENERATION_TOKENS_PER_SECOND)),
        ]
        self.dashboard = cloudwatch.Dashboard(self, "Dashboard", widgets=[widgets])

    def _alarm(
        self,
        name: str,
        description: str,
        metric: cloudwatch.IMetric,
        threshold: float,
        *,
        evaluation_periods: int,
        deployment: bool = False,
    ) -> cloudwatch.Alarm:
        # A deployment alarm is named literally: the service references it by name, and a Ref
        # could close a dependency cycle through the alarm's metrics (aws-ecs README).
        literal_name = f"llmfleet-{self.plan.fleet}-{self.plan.stage}-{self.plan.model_name}-{name}"
        literal = literal_name if deployment else None
        alarm = notify_alarm(
            self,
            name,
            self.topic,
            description,
            metric,
            threshold,
            evaluation_periods,
            alarm_name=literal,
        )
        self.alarms[name] = alarm
        if deployment:
            self.deployment_alarm_names.append(literal_name)
        return alarm

    def _error_rate_alarm(
        self, name: str, where: str, what: str, requests: cloudwatch.IMetric, errors: cloudwatch.IMetric, label: str, *, deployment: bool = False
    ) -> cloudwatch.MathExpression:
        """Alarm when over ERROR_RATE_PERCENT of `what` were answered 5xx for 3 minutes; the rate, for graphs."""
        error_rate = _error_rate(requests, errors, label)
        self._alarm(
            name,
            f"{self.plan.model_name} on {where}: more than {ERROR_RATE_PERCENT}% of {what} answered 5xx for 3 minutes",
            error_rate,
            ERROR_RATE_PERCENT,
            evaluation_periods=3,
            deployment=deployment,
        )
        return error_rate

    def _ecs(self, service: GpuServiceConstruct) -> list[cloudwatch.IWidget]:
        plan = self.plan
        requests, target_5xx = service.metric_requests(), service.metric_target_5xx()
        error_rate = self._error_rate_alarm("Ecs5xxRate", "ECS", "requests", requests, target_5xx, "target 5xx %", deployment=True)
        unhealthy = service.metric_unhealthy_hosts()
        self._alarm(
            "EcsUnhealthyHosts",
            f"{plan.model_name} on ECS: a vLLM server failed its /health check for 5 minutes",
            unhealthy,
            1,
            evaluation_periods=5,
        )
        pending = service.metric_tasks_not_running()
        self._alarm(
            "EcsTasksPending",
            f"{plan.model_name} on ECS: tasks wait for GPU capacity for {PENDING_TASK_MINUTES} minutes "
            f"({plan.instance_type} may be short in this region)",
            pending,
            1,
            evaluation_periods=PENDING_TASK_MINUTES // 5,
        )
        service.enable_deployment_alarms(self.deployment_alarm_names)
        return [
            graph("ECS requests/min", [requests]),
            graph("ECS 5xx", [target_5xx, service.metric_load_balancer_5xx(), error_rate]),
            graph("ECS hosts", [service.metric_healthy_hosts(), unhealthy]),
            graph(f"GPU instances ({plan.instance_type})", [service.metric_instances_in_service(), pending]),
        ]

    def _sagemaker(self, endpoint: SageMakerEndpointConstruct) -> list[cloudwatch.IWidget]:
        plan = self.plan
        for alarm in endpoint.rollback_alarms:  # operators hear about a rolled-back update too
            alarm.add_alarm_action(cw_actions.SnsAction(self.topic))
        invocations, errors = endpoint.metric_invocations(), endpoint.metric_server_5xx()
        error_rate = self._error_rate_alarm("SageMaker5xxRate", "SageMaker", "invocations", invocations, errors, "5xx %")
        refused = [endpoint.metric_no_capacity_failures()] if endpoint.inference_component_name else []
        return [
            graph("SageMaker invocations/min", [invocations, *refused]),
            graph("SageMaker 5xx", [errors, error_rate]),
            graph("SageMaker model latency (us)", [endpoint.metric_model_latency()]),
            graph(f"SageMaker GPU utilization % ({plan.sagemaker_instance_type})", [endpoint.metric_gpu_utilization()]),
        ]


def notify_alarm(
    scope: Construct,
    id: str,
    topic: sns.ITopic,
    description: str,
    metric: cloudwatch.IMetric,
    threshold: float,
    evaluation_periods: int,
    *,
    alarm_name: str | None = None,
    below: bool = False,
    missing: cloudwatch.TreatMissingData = cloudwatch.TreatMissingData.NOT_BREACHING,
) -> cloudwatch.Alarm:
    """An alarm that notifies `topic` when it fires and when it clears: at or above `threshold` for
    `evaluation_periods` periods (below it when `below`)."""
    alarm = cloudwatch.Alarm(
        scope,
        id,
        alarm_name=alarm_name,
        alarm_description=description,
        metric=metric,
        threshold=threshold,
        evaluation_periods=evaluation_periods,
        comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD
        if below
        else cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treat_missing_data=missing,
    )
    alarm.add_alarm_action(cw_actions.SnsAction(topic))
    alarm.add_ok_action(cw_actions.SnsAction(topic))
    return alarm


def graph(title: str, metrics: list[cloudwatch.IMetric]) -> cloudwatch.GraphWidget:
    return cloudwatch.GraphWidget(title=title, left=metrics, width=6, height=6)


def _error_rate(requests: cloudwatch.IMetric, errors: cloudwatch.IMetric, label: str) -> cloudwatch.MathExpression:
    """Percent of requests answered 5xx per minute; 0 when idle (no division by zero, no missing data)."""
    return cloudwatch.MathExpression(
        expression="IF(requests > 0, 100 * FILL(errors, 0) / requests, 0)",
        using_metrics={"requests": requests, "errors": errors},
        label=label,
        period=ONE_MINUTE,
    )


@dataclass(frozen=True)
class GatewayMonitoringProps:
    """title: the dashboard's heading ("gateway of demo (prod)"). fleet, stage: whose usage metrics
    the dashboard shows (EMF dimensions Fleet and Stage). topic: where alarms notify. service,
    database, cache: the gateway's parts, whose metrics the alarms and widgets use."""

    title: str
    fleet: str
    stage: str
    topic: sns.ITopic
    service: GatewayServiceConstruct
    database: GatewayDatabaseConstruct
    cache: GatewayCacheConstruct


class GatewayMonitoringConstruct(Construct):
    """Alarms on the gateway (5xx rate, tasks below the minimum, CPU), its database (CPU, connections)
    and cache (CPU, connections, evictions); a dashboard with those and the per-consumer usage the
    gateway publishes (EMF, model_store.gateway.contract.METRICS_NAMESPACE)."""

    def __init__(self, scope: Construct, id: str, props: GatewayMonitoringProps) -> None:
        super().__init__(scope, id)
        service, database, cache = props.service, props.database, props.cache
        self.alarms: dict[str, cloudwatch.Alarm] = {}

        def alarm(
            name: str, description: str, metric: cloudwatch.IMetric, threshold: float, periods: int, **options
        ) -> None:
            self.alarms[name] = notify_alarm(
                self, name, props.topic, description, metric, threshold, periods, **options
            )

        requests = service.metric_requests()
        errors = cloudwatch.MathExpression(
            expression="FILL(gateway, 0) + FILL(balancer, 0)",
            using_metrics={"gateway": service.metric_target_5xx(), "balancer": service.metric_load_balancer_5xx()},
            label="5xx",
            period=ONE_MINUTE,
        )
        error_rate = _error_rate(requests, errors, "5xx %")
        alarm(
            "Gateway5xxRate",
            f"gateway: more than {ERROR_RATE_PERCENT}% of requests answered 5xx for 3 minutes",
            error_rate,
            ERROR_RATE_PERCENT,
            3,
        )
        running, least = service.metric_running_tasks(), service.sizing.min_tasks
        alarm(
            "GatewayTasksBelowMinimum",
            f"gateway: fewer than {least} tasks running for 10 minutes (tasks failing their health check or to start)",
            running,
            least,
            2,
            below=True,
            missing=cloudwatch.TreatMissingData.BREACHING,  # no task, no datapoint
        )
        alarm(
            "GatewayCpu",
            f"gateway: tasks above {GATEWAY_CPU_PERCENT}% CPU for 15 minutes "
            f"(autoscaling at max_tasks {service.sizing.max_tasks}?)",
            service.metric_cpu(),
            GATEWAY_CPU_PERCENT,
            3,
        )
        alarm(
            "DatabaseCpu",
            f"gateway database: CPU above {DATA_CPU_PERCENT}% for 15 minutes",
            database.metric_cpu(),
            DATA_CPU_PERCENT,
            3,
        )
        alarm(
            "DatabaseConnections",
            f"gateway database: {DATABASE_CONNECTIONS} connections or more for 15 minutes "
            f"(a connection leak, or max ACU too low)",
            database.metric_connections(),
            DATABASE_CONNECTIONS,
            3,
        )
        alarm(
            "CacheCpu",
            f"gateway cache: engine CPU above {DATA_CPU_PERCENT}% for 15 minutes",
            cache.metric_cpu(),
            DATA_CPU_PERCENT,
            3,
        )
        alarm(
            "CacheConnections",
            f"gateway cache: {CACHE_CONNECTIONS} connections or more for 15 minutes (a connection leak)",
            cache.metric_connections(),
            CACHE_CONNECTIONS,
            3,
        )
        alarm(
            "CacheEvictions",
            "gateway cache: keys evicted for want of memory (rate-limit windows reset early); a larger node_type",
            cache.metric_evictions(),
            1,
            1,
        )
        widgets: list[cloudwatch.IWidget] = [
            cloudwatch.TextWidget(markdown=f"# {props.title}", width=24, height=2),
            graph("Gateway requests/min", [requests]),
            graph("Gateway 5xx", [service.metric_target_5xx(), service.metric_load_balancer_5xx(), error_rate]),
            graph("Gateway tasks and CPU %", [running, service.metric_cpu()]),
            graph(
                "Database CPU %, connections, ACUs",
                [database.metric_cpu(), database.metric_connections(), database.metric_capacity()],
            ),
            graph(
                "Cache CPU %, connections, evictions",
                [cache.metric_cpu(), cache.metric_connections(), cache.metric_evictions()],
            ),
            *(
                usage_graph(title, metric, statistic, props.fleet, props.stage)
                for title, metric, statistic in USAGE_WIDGETS
            ),
        ]
        self.dashboard = cloudwatch.Dashboard(self, "Dashboard", widgets=[widgets])


def usage_graph(title: str, metric_name: str, statistic: str, fleet: str, stage: str) -> cloudwatch.GraphWidget:
    """One line per consumer and model of one of the gateway's EMF metrics, this fleet stage's only
    (a SEARCH: consumers come and go)."""
    dimensions = ",".join((gateway_contract.METRICS_NAMESPACE, *gateway_contract.METRIC_DIMENSIONS))
    search = cloudwatch.MathExpression(
        expression=f"SEARCH('{{{dimensions}}} Fleet=\"{fleet}\" Stage=\"{stage}\" MetricName=\"{metric_name}\"', "
        f"'{statistic}', 60)",
        using_metrics={},
        label="",
        period=ONE_MINUTE,
    )
    return graph(title, [search])
