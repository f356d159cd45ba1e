"""Scale-to-zero policies both targets share: stop the last server after an idle period, and wake
one on a refused request. Target tracking can do neither: with no requests its metric has no
datapoints, and at zero servers there is nothing to divide by.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from constructs import Construct


def scale_to_zero_when_idle(
    scope: Construct, target: appscaling.IScalableTarget, activity: cloudwatch.IMetric, idle_minutes: int, where: str
) -> cloudwatch.Alarm:
    """Capacity 0 once `activity` (per minute) has been 0 for `idle_minutes` minutes in a row.

    A minute with no datapoint counts as idle. `activity` must count the requests refused for want of
    a server too, or a target that is waking up would be stopped again.
    """
    to_zero = appscaling.StepScalingAction(
        scope, "ScaleToZero", scaling_target=target, adjustment_type=appscaling.AdjustmentType.EXACT_CAPACITY
    )
    to_zero.add_adjustment(adjustment=0, upper_bound=0)
    alarm = cloudwatch.Alarm(
        scope,
        "Idle",
        alarm_description=f"{where}: no request for {idle_minutes} minutes; scales to zero",
        metric=activity,
        threshold=0,
        comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_OR_EQUAL_TO_THRESHOLD,
        evaluation_periods=idle_minutes,
        datapoints_to_alarm=idle_minutes,
        treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
    )
    alarm.add_alarm_action(cw_actions.ApplicationScalingAction(to_zero))
    return alarm


def wake_on_refused_requests(
    scope: Construct, target: appscaling.IScalableTarget, refused: cloudwatch.IMetric, where: str, wake_seconds: int
) -> cloudwatch.Alarm:
    """One more server as soon as a minute has a request refused for want of one (`refused`, per minute).

    The alarm stays in ALARM while the woken server starts and refusals go on; the cooldown, the
    planned wake-up, keeps that from starting a second, third ... server for the same refusals.
    """
    wake = appscaling.StepScalingAction(
        scope,
        "ScaleFromZero",
        scaling_target=target,
        adjustment_type=appscaling.AdjustmentType.CHANGE_IN_CAPACITY,
        metric_aggregation_type=appscaling.MetricAggregationType.MAXIMUM,
        cooldown=Duration.seconds(wake_seconds),
    )
    wake.add_adjustment(adjustment=1, lower_bound=0)
    alarm = cloudwatch.Alarm(
        scope,
        "Refused",
        alarm_description=f"{where}: a request found no server; starts one",
        metric=refused,
        threshold=1,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        evaluation_periods=1,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
    )
    alarm.add_alarm_action(cw_actions.ApplicationScalingAction(wake))
    return alarm
