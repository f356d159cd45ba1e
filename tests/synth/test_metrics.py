"""Stacks read the container's metrics by model_store.contract.telemetry's contract, per target."""

from __future__ import annotations

import pytest

from llmfleet.model_store.contract import telemetry
from llmfleet.stacks.config import StackConfigError
from llmfleet.stacks.metrics import fleet_metric
from tests.synth.conftest import Synthesized


def test_metric_dimensions_are_the_contracts_with_the_target(secure_fleet: Synthesized) -> None:
    plan = next(p for p in secure_fleet.fleet.plans if set(p.targets) == {"ecs", "sagemaker"})
    for target in plan.targets:
        metric = fleet_metric(plan, telemetry.REQUESTS_WAITING, target)
        assert metric.namespace == telemetry.NAMESPACE
        assert tuple(metric.dimensions) == telemetry.DIMENSIONS
        assert metric.dimensions["Target"] == target


def test_a_target_the_plan_does_not_serve_on_is_refused(secure_fleet: Synthesized) -> None:
    plan = next(p for p in secure_fleet.fleet.plans if p.targets == ["ecs"])
    with pytest.raises(StackConfigError, match=f"model '{plan.model_name}': target 'sagemaker' is not one of"):
        fleet_metric(plan, telemetry.REQUESTS_WAITING, "sagemaker")
