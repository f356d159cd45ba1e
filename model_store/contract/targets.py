"""The serving targets: one row each (SkyPilot's clouds are the pattern).

A target is where a plan's servers run: ECS tasks on GPU EC2 behind an ALB, or a SageMaker
endpoint. Its row says what every side needs to know about it: the port the orchestrator sends
traffic to, which catalog columns hold its instance type and price, where it copies the model
before the container starts, and how long it takes to get a fresh instance. Code asks the row
(`TARGETS[name]`) instead of comparing target names; adding a target is a row here and the
construct that deploys it (stacks/), and tests/unit/test_tables.py lists where else a target may
be named.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class ServingTarget:
    name: str  # as fleet.yaml's `serving.targets` and LLMFLEET_TARGET spell it
    label: str  # in messages and tables
    port: int  # where the orchestrator sends traffic to the container
    instance_field: str  # the catalog's column (GpuInstance attribute) of its instance type; None: not offered
    price_field: str  # the catalog's column of its on-demand $/h; None: not offered
    price_source_field: str  # the catalog's column saying where that price was read
    model_dir: str | None  # where the orchestrator copies the model's store prefix before the container starts
    warm_pool: bool  # stopped instances can be kept booted with the image pulled (ECS capacity providers)
    launch_seconds: int  # from the scale-out decision to a fresh instance starting the container
    invocations: bool  # `/invocations` is a door: SageMaker's signed runtime API in front of it

    def instance_type(self, instance: Any) -> str | None:
        return getattr(instance, self.instance_field)

    def price(self, instance: Any) -> float | None:
        return getattr(instance, self.price_field)

    def price_source(self, instance: Any) -> str:
        return getattr(instance, self.price_source_field)


# Launch times are estimates, not measurements: launching a fresh EC2 instance and registering its
# ECS agent (~2 min), SageMaker provisioning an instance for an inference component (1.75 min, AWS
# ML blog "scale down to zero", 2024-12). Ports: ECS task definitions map 8000; SageMaker requires 8080.
ECS = ServingTarget(
    "ecs", "ECS", 8000, "name", "price_usd_hour", "price_source",
    model_dir=None, warm_pool=True, launch_seconds=120, invocations=False,
)  # fmt: skip
SAGEMAKER = ServingTarget(
    "sagemaker", "SageMaker", 8080, "sagemaker_name", "sagemaker_price_usd_hour", "sagemaker_price_source",
    model_dir="/opt/ml/model", warm_pool=False, launch_seconds=105, invocations=True,
)  # fmt: skip

TARGETS = {row.name: row for row in (ECS, SAGEMAKER)}
TargetName = Literal["ecs", "sagemaker"]  # the manifest's and the plan's type; a test holds it to TARGETS
DEFAULT_TARGET = ECS.name  # a container without LLMFLEET_TARGET is an ECS task; a model without targets is served on ECS


def target(name: str) -> ServingTarget:
    """The row of `name`; ValueError naming the targets there are."""
    try:
        return TARGETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"target {name!r:.80}: allowed {sorted(TARGETS)}") from None
