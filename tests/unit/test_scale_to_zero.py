"""Scale to zero and the warm pool in the plan: idle period, wake-up estimate, warm-pool size and cost."""

from __future__ import annotations

import re

import pytest
import yaml

from llmfleet.model_store.facts.architectures import known_architecture
from llmfleet.model_store.contract.manifest import FleetManifest, ManifestError, ModelSpec, parse_fleet
from llmfleet.model_store.contract.plan import GIB
from llmfleet.model_store.planning.fit import PlanError
from llmfleet.model_store.planning.lifecycle import (
    DEFAULT_IDLE_MINUTES,
    GP3_USD_PER_GIB_MONTH,
    IMAGE_PULL_SECONDS,
    ROOT_VOLUME_GIB,
    root_volume_gib,
    WAKE_ALARM_SECONDS,
    wake_seconds,
    WARM_INSTANCE_START_SECONDS,
    warm_pool_size,
    warm_pool_usd_per_month,
)
from llmfleet.model_store.planning.text import plan_model
from llmfleet.model_store.contract.targets import ECS, SAGEMAKER


def _plan(**serving):
    model = {"name": "m", "source": "s3://llmfleet-store/models/m", "architecture": "Qwen/Qwen3-8B", "serving": serving}
    fleet = FleetManifest.model_validate({"name": "f", "models": [model]})
    spec: ModelSpec = fleet.models[0]
    return plan_model(fleet, spec, known_architecture(spec.architecture))


def test_a_model_that_stays_up_has_no_idle_period_and_no_warm_pool() -> None:
    plan = _plan(min_capacity=1)
    assert (plan.autoscaling.idle_minutes, plan.autoscaling.wake_seconds) == (None, {})
    assert (plan.autoscaling.warm_pool_instances, plan.autoscaling.warm_pool_usd_per_month) == (0, 0.0)
    assert not any("warm pool" in r or "scale to zero" in r for r in plan.reasons)


def test_scale_to_zero_defaults_to_half_an_hour_and_one_warm_instance_with_its_cost_in_the_reasons() -> None:
    plan = _plan(min_capacity=0, targets=["ecs", "sagemaker"])
    scaling = plan.autoscaling
    assert scaling.idle_minutes == DEFAULT_IDLE_MINUTES
    assert scaling.warm_pool_instances == 1
    assert scaling.warm_pool_usd_per_month == round(plan.root_volume_gib * GP3_USD_PER_GIB_MONTH, 2)
    assert set(scaling.wake_seconds) == {"ecs", "sagemaker"}
    # The warm pool spares ECS the launch and the pull that SageMaker still pays.
    assert scaling.wake_seconds["ecs"] < scaling.wake_seconds["sagemaker"]
    warm = next(r for r in plan.reasons if r.startswith("ECS warm pool"))
    assert f"${scaling.warm_pool_usd_per_month:.2f}/month" in warm
    zero = next(r for r in plan.reasons if r.startswith("scale to zero"))
    assert f"after {DEFAULT_IDLE_MINUTES} min" in zero and "on ecs" in zero and "on sagemaker" in zero


def test_the_manifest_sets_idle_minutes_and_the_warm_pool() -> None:
    plan = _plan(min_capacity=0, idle_minutes=45, warm_pool=0, max_capacity=3)
    assert plan.autoscaling.idle_minutes == 45
    assert plan.autoscaling.warm_pool_instances == 0
    # Without a warm pool ECS launches and pulls: slower to wake.
    assert plan.autoscaling.wake_seconds["ecs"] > _plan(min_capacity=0).autoscaling.wake_seconds["ecs"]
    assert _plan(min_capacity=2, max_capacity=3, warm_pool=2).autoscaling.warm_pool_instances == 2


def test_an_idle_period_shorter_than_a_wake_up_is_refused_with_both_figures() -> None:
    with pytest.raises(PlanError, match=r"field 'serving.idle_minutes': 5 min is not longer than the ~\d+ s"):
        _plan(min_capacity=0, idle_minutes=5, warm_pool=0, targets=["sagemaker"])


def test_wake_seconds_add_the_alarm_and_the_start_of_an_instance_to_the_boot() -> None:
    boot = 400.0
    assert wake_seconds(["ecs"], boot, warm_pool=1) == {"ecs": WAKE_ALARM_SECONDS + WARM_INSTANCE_START_SECONDS + 400 - IMAGE_PULL_SECONDS}
    assert wake_seconds(["ecs"], boot, warm_pool=0) == {"ecs": WAKE_ALARM_SECONDS + ECS.launch_seconds + 400}
    assert wake_seconds(["sagemaker"], boot, warm_pool=1) == {"sagemaker": WAKE_ALARM_SECONDS + SAGEMAKER.launch_seconds + 400}


def test_warm_pool_size_and_cost() -> None:
    def serving(**fields):
        return parse_fleet(_fleet_yaml(fields)).models[0].serving

    assert warm_pool_size(serving(min_capacity=0)) == 1
    assert warm_pool_size(serving(min_capacity=1)) == 0
    assert warm_pool_size(serving(min_capacity=1, warm_pool=2)) == 2
    assert warm_pool_size(serving(min_capacity=0, targets=["sagemaker"])) == 0  # SageMaker has no warm pool
    assert warm_pool_usd_per_month(2, 100) == 2 * 100 * GP3_USD_PER_GIB_MONTH


def test_root_volume_holds_two_revisions_of_weights_only_without_nvme() -> None:
    assert root_volume_gib(15 * GIB, nvme_gb=250) == ROOT_VOLUME_GIB
    assert root_volume_gib(15 * GIB + 1, nvme_gb=0) == ROOT_VOLUME_GIB + 2 * 16


def _fleet_yaml(serving: dict) -> str:
    model = {"name": "m", "source": "s3://llmfleet-store/models/m", "architecture": "Qwen/Qwen3-8B", "serving": serving}
    return yaml.safe_dump({"name": "f", "models": [model]})


@pytest.mark.parametrize(
    ("serving", "message"),
    [
        ({"min_capacity": 1, "idle_minutes": 30}, "idle_minutes (30) applies only with min_capacity 0, but min_capacity is 1"),
        ({"min_capacity": 0, "idle_minutes": 2}, "idle_minutes"),
        ({"min_capacity": 0, "idle_minutes": 1441}, "idle_minutes"),
        ({"targets": ["sagemaker"], "warm_pool": 1}, "warm_pool (1) keeps ECS instances, but targets are ['sagemaker']"),
        ({"max_capacity": 2, "warm_pool": 3}, "warm_pool (3) exceeds max_capacity (2)"),
    ],
)
def test_bad_scale_to_zero_knobs_are_refused_naming_the_field(serving: dict, message: str) -> None:
    with pytest.raises(ManifestError, match=re.escape(message)):
        parse_fleet(_fleet_yaml(serving))
