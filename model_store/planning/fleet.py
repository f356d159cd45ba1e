"""Load a fleet manifest and its lock from disk and plan every model: the one way the CLI,
the CDK app and the local fleet turn `fleet.yaml` into ServingPlans. Never the network."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from llmfleet.model_store.facts.families import ArchitectureFacts
from llmfleet.model_store.facts.lock import check_lock, FleetLock, offline_lock, read_lock
from llmfleet.model_store.contract.manifest import FleetManifest, load_fleet, ManifestError
from llmfleet.model_store.contract.plan import AnyPlan
from llmfleet.model_store.planning.kinds import plan_any_model, plan_fleet


def load_fleet_and_lock(fleet_path: str | Path, stage: str | None = None) -> tuple[FleetManifest, FleetLock]:
    """The manifest (`stage` overrides its own, validated like it) and the facts to plan it
    with: `fleet.lock.json` beside it, checked against it, or the offline sources without one."""
    fleet_path = Path(fleet_path)
    fleet = load_fleet(fleet_path)
    if stage is not None and stage != fleet.stage:
        try:
            fleet = FleetManifest.model_validate({**fleet.model_dump(mode="json"), "stage": stage})
        except ValidationError:
            pattern = FleetManifest.model_fields["stage"].metadata[0].pattern
            raise ManifestError(f"stage {stage!r} must match {pattern}") from None
    lock = read_lock(fleet_path)
    if lock is None:
        return fleet, offline_lock(fleet, fleet_path.parent)
    check_lock(fleet, lock, fleet_path)
    return fleet, lock


def adapter_base_from_lock(fleet_path: str | Path, model: str) -> tuple[FleetManifest, ArchitectureFacts]:
    """The fleet and the architecture its lock records for `model`: what an adapter of it is
    checked against without the store (a pull request's check). ManifestError when the fleet
    has no such model or it is an image model (no LoRA adapters)."""
    fleet, lock = load_fleet_and_lock(fleet_path)
    entry = lock.models.get(model)
    if entry is None:
        raise ManifestError(f"{fleet_path}: no model {model!r}; its models are {sorted(lock.models)}")
    facts = entry.model.facts()
    if not isinstance(facts, ArchitectureFacts):
        raise ManifestError(f"{fleet_path}: model {model!r} is an image pipeline; it takes no LoRA adapters")
    return fleet, facts


def plan_with_lock(fleet: FleetManifest, lock: FleetLock) -> list[AnyPlan]:
    facts = {name: entry.model.facts() for name, entry in lock.models.items()}
    drafts = {name: entry.draft.facts() if entry.draft else None for name, entry in lock.models.items()}
    return plan_fleet(fleet, lambda spec: facts[spec.name], lambda spec: drafts[spec.name], plan_one=plan_any_model)


def load_and_plan(fleet_path: str | Path, stage: str | None = None) -> tuple[FleetManifest, list[AnyPlan]]:
    """Read, validate and plan `fleet_path`.

    Raises ManifestError (bad manifest, stage or lock) or PlanError (a model that does not fit).
    """
    fleet, lock = load_fleet_and_lock(fleet_path, stage)
    return fleet, plan_with_lock(fleet, lock)
