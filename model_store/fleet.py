"""Load a fleet manifest from disk and plan every model: the one way the CLI, the CDK app
and the local fleet turn `fleet.yaml` into ServingPlans."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from model_store.architectures import architecture_for, draft_architecture_for
from model_store.manifest import FleetManifest, ManifestError, load_fleet
from model_store.plan import ServingPlan, plan_fleet


def load_and_plan(fleet_path: str | Path, stage: str | None = None) -> tuple[FleetManifest, list[ServingPlan]]:
    """Read, validate and plan `fleet_path`; `stage` overrides the manifest's and is validated like it.

    Raises ManifestError (bad manifest or stage) or PlanError (a model that does not fit).
    """
    fleet_path = Path(fleet_path)
    fleet = load_fleet(fleet_path)
    if stage is not None and stage != fleet.stage:
        try:
            fleet = FleetManifest.model_validate({**fleet.model_dump(mode="json"), "stage": stage})
        except ValidationError:
            pattern = FleetManifest.model_fields["stage"].metadata[0].pattern
            raise ManifestError(f"stage {stage!r} must match {pattern}") from None
    plans = plan_fleet(fleet, lambda spec: architecture_for(spec, fleet_path.parent), draft_architecture_for)
    return fleet, plans
