"""What the CDK app takes from outside: cdk.json/`-c` context and the planned fleet.

Read once at the edge (`app.py`); constructs receive plain values.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from constructs import Node
from pydantic import ValidationError

from model_store.architectures import architecture_for, draft_architecture_for
from model_store.manifest import FleetManifest, load_fleet
from model_store.plan import ServingPlan, plan_fleet
from model_store.store import StoreLocation


class StackConfigError(ValueError):
    """Context or construct props the stacks cannot build from; says which value and what is allowed."""


@dataclass(frozen=True)
class FleetSettings:
    """The app's context values (`cdk.json` defaults, `-c key=value` overrides)."""

    fleet_path: Path
    stage: str | None = None
    certificate_arn: str | None = None
    github_repo: str | None = None
    alarm_email: str | None = None
    image_tag: str | None = None
    allowed_cidr: str = "0.0.0.0/0"
    github_oidc_provider_arn: str | None = None

    @classmethod
    def from_context(cls, node: Node) -> FleetSettings:
        def text(key: str) -> str | None:
            value = node.try_get_context(key)
            return str(value) if value not in (None, "") else None

        github_repo = text("github_repo")
        if github_repo is not None and github_repo.count("/") != 1:
            raise StackConfigError(f"context 'github_repo': {github_repo!r} is not 'owner/name'")
        certificate_arn = text("certificate_arn")
        if certificate_arn is not None and not certificate_arn.startswith("arn:"):
            raise StackConfigError(f"context 'certificate_arn': {certificate_arn!r} is not an ACM certificate ARN")
        allowed_cidr = text("allowed_cidr") or "0.0.0.0/0"
        try:
            ipaddress.IPv4Network(allowed_cidr)
        except ValueError as exc:
            raise StackConfigError(f"context 'allowed_cidr': {allowed_cidr!r} is not an IPv4 CIDR ({exc})") from None
        return cls(
            fleet_path=Path(text("fleet") or "fleet.yaml"),
            stage=text("stage"),
            certificate_arn=certificate_arn,
            github_repo=github_repo,
            alarm_email=text("alarm_email"),
            image_tag=text("image_tag"),
            allowed_cidr=allowed_cidr,
            github_oidc_provider_arn=text("github_oidc_provider_arn"),
        )


def plan_manifest(fleet_path: Path, stage: str | None = None) -> tuple[FleetManifest, list[ServingPlan]]:
    """Load and plan a fleet; `stage` (context) overrides the manifest's stage and is validated like it.

    Raises ManifestError / PlanError with the manifest's own messages, StackConfigError for a bad stage.
    """
    fleet = load_fleet(fleet_path)
    if stage is not None and stage != fleet.stage:
        try:
            fleet = FleetManifest.model_validate({**fleet.model_dump(mode="json"), "stage": stage})
        except ValidationError:
            pattern = FleetManifest.model_fields["stage"].metadata[0].pattern
            raise StackConfigError(f"context 'stage': {stage!r} must match {pattern}") from None
    plans = plan_fleet(fleet, lambda spec: architecture_for(spec, fleet_path.parent), draft_architecture_for)
    return fleet, plans


def store_of(plans: list[ServingPlan]) -> StoreLocation:
    """The one store every model's `s3://` source lives in: its source up to the store's `models/`
    folder (the store keeps a model under `models/<model name>/<revision>` whatever the source's
    last segment says). The stacks create its bucket and grant on its prefixes."""
    stores = set()
    for plan in plans:
        if plan.source.startswith("s3://"):
            bucket, _, key = plan.source.removeprefix("s3://").partition("/")
            prefix, found, _ = f"/{key}".rpartition("/models/")
            stores.add(StoreLocation(bucket=bucket, prefix=prefix.strip("/") if found else ""))
    if len(stores) != 1:
        found_uris = sorted(store_uri(s) for s in stores)
        raise StackConfigError(
            f"model sources must all be s3:// URIs in one store (s3://bucket[/prefix]/models/...) to deploy; "
            f"found stores {found_uris} (local sources are uploaded with `llmfleet model upload` first)"
        )
    return stores.pop()


def store_uri(store: StoreLocation) -> str:
    """`s3://bucket[/prefix]`, as LLMFLEET_STORE and `--store` take it."""
    return f"s3://{store.bucket}/{store.prefix}" if store.prefix else f"s3://{store.bucket}"


def source_prefix(plan: ServingPlan) -> str:
    """The model's key prefix in the store bucket (`models/<name>`), without slashes at the ends."""
    _, _, prefix = plan.source.removeprefix("s3://").partition("/")
    if not prefix.strip("/"):
        raise StackConfigError(
            f"model {plan.model_name!r}: source {plan.source!r} has no key prefix; read grants are scoped to one "
            f"(e.g. s3://bucket/models/{plan.model_name})"
        )
    return prefix.strip("/")
