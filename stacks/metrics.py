"""The serving container's metrics as CloudWatch metric objects for autoscaling, alarms and dashboards.

Namespace, dimensions and names are model_store.contract.telemetry's: the one contract the entrypoint
publishes to and `llmfleet status` reads, so a rename cannot silently break scaling.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch

from llmfleet.model_store.contract import telemetry
from llmfleet.model_store.contract.plan import DeploymentPlan
from llmfleet.stacks.config import StackConfigError

ONE_MINUTE = cdk.Duration.minutes(1)
FIVE_MINUTES = cdk.Duration.minutes(5)


def fleet_metric(
    plan: DeploymentPlan,
    name: str,
    target: str,
    *,
    statistic: str = "Average",
    period: cdk.Duration = ONE_MINUTE,
) -> cloudwatch.Metric:
    """One of the container's EMF metrics for a model on one target (`ecs` or `sagemaker`).

    Per target: a model served on both must not average one target's queue into the other's scaling.
    """
    if target not in plan.targets:
        raise StackConfigError(f"metric {name} of model {plan.model_name!r}: target {target!r} is not one of {plan.targets}")
    return cloudwatch.Metric(
        namespace=telemetry.NAMESPACE,
        metric_name=name,
        dimensions_map=telemetry.dimensions(plan.model_name, plan.stage, target),
        statistic=statistic,
        period=period,
    )
