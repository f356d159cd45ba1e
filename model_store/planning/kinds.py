"""Every model of a fleet planned by its kind's planner.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llmfleet.model_store.contract.manifest import FleetManifest, ModelSpec
from llmfleet.model_store.contract.plan import AnyPlan, DeploymentPlan
from llmfleet.model_store.facts.families import ArchitectureFacts
from llmfleet.model_store.planning.fit import PlanError
from llmfleet.model_store.planning.image import plan_image_model
from llmfleet.model_store.planning.text import plan_model
from llmfleet.model_store.contract.kinds import IMAGE, kind


def plan_fleet(
    fleet: FleetManifest,
    architecture_of: Callable[[ModelSpec], Any],
    draft_architecture_of: Callable[[ModelSpec], ArchitectureFacts | None] = lambda _: None,
    plan_one: Callable[..., DeploymentPlan] = plan_model,
) -> list[DeploymentPlan]:
    """Plan every model with `plan_one(fleet, spec, facts, draft=...)` (image_plan.plan_any_model
    plans every kind); raise one PlanError listing every model that does not fit."""
    plans, failures = [], []
    for spec in fleet.models:
        try:
            plans.append(plan_one(fleet, spec, architecture_of(spec), draft=draft_architecture_of(spec)))
        except PlanError as exc:
            failures.append(str(exc))
    if failures:
        raise PlanError("\n".join(failures))
    return plans


def plan_any_model(fleet: FleetManifest, spec: ModelSpec, facts: Any, *, draft: Any = None) -> AnyPlan:
    """`plan_fleet`'s planner for every kind: image pipelines here, text models by plan_model."""
    if kind(spec.kind) is IMAGE:
        return plan_image_model(fleet, spec, facts)
    return plan_model(fleet, spec, facts, draft=draft)
