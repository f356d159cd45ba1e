"""What the CDK app takes from outside: cdk.json/`-c` context and the planned fleet.

Read once at the edge (`app.py`); constructs receive plain values.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from constructs import Node

from llmfleet.model_store.errors import EXIT_BAD_INPUT, LlmfleetError
from llmfleet.model_store.contract.plan import DeploymentPlan
from llmfleet.model_store.store.store import StoreLocation


# The serving image is built FROM its base pinned by digest (containers/vllm/Dockerfile refuses
# anything else): `<repository>[:<tag>]@sha256:<64 hex>`.
IMAGE_BY_DIGEST = r"^[a-z0-9][a-z0-9._/-]*(?::[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?@sha256:[0-9a-f]{64}$"
# cdk.json's `vllm_image` until a real digest is set: the right shape, so a fresh checkout
# synthesizes (with a warning), but no registry holds it, so a deploy fails building the image.
PLACEHOLDER_DIGEST = "sha256:" + "0" * 64


class StackConfigError(LlmfleetError):
    """Context or construct props the stacks cannot build from; says which value and what is allowed."""

    exit_code = EXIT_BAD_INPUT


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
    github_environment: str | None = None
    github_ref: str | None = None
    vllm_image: str | None = None
    gateway_image: str | None = None
    gateway_base_image: str | None = None
    waf: bool = True
    waf_block: bool = True
    deletion_protection: bool = True

    @classmethod
    def from_context(cls, node: Node) -> FleetSettings:
        def text(key: str) -> str | None:
            value = node.try_get_context(key)
            return str(value) if value not in (None, "") else None

        github_repo = text("github_repo")
        if github_repo is not None and github_repo.count("/") != 1:
            raise StackConfigError(f"context 'github_repo': {github_repo!r} is not 'owner/name'")
        github_environment, github_ref = text("github_environment"), text("github_ref")
        if github_environment is not None and github_ref is not None:
            raise StackConfigError(
                f"context 'github_environment' {github_environment!r} and 'github_ref' {github_ref!r}: "
                f"the CI role trusts one of them; give either"
            )
        def pinned(key: str) -> str | None:
            image = text(key)
            if image is not None and not re.fullmatch(IMAGE_BY_DIGEST, image):
                raise StackConfigError(
                    f"context '{key}': {image!r} is not pinned by digest; "
                    f"use <repository>:<tag>@sha256:<64 hex> (docker buildx imagetools inspect <repository>:<tag>)"
                )
            return image

        vllm_image = pinned("vllm_image")
        certificate_arn = text("certificate_arn")
        if certificate_arn is not None and not certificate_arn.startswith("arn:"):
            raise StackConfigError(f"context 'certificate_arn': {certificate_arn!r} is not an ACM certificate ARN")
        allowed_cidr = text("allowed_cidr") or "0.0.0.0/0"
        try:
            ipaddress.IPv4Network(allowed_cidr)
        except ValueError as exc:
            raise StackConfigError(f"context 'allowed_cidr': {allowed_cidr!r} is not an IPv4 CIDR ({exc})") from None
        def switch(key: str) -> bool:
            value = text(key) or "on"
            if value not in ("on", "off"):
                raise StackConfigError(f"context '{key}': {value!r}; use 'on' (default) or 'off'")
            return value == "on"

        waf_mode = text("waf_mode") or "block"
        if waf_mode not in ("block", "count"):
            raise StackConfigError(f"context 'waf_mode': {waf_mode!r}; use 'block' (default) or 'count'")
        return cls(
            fleet_path=Path(text("fleet") or "fleet.yaml"),
            stage=text("stage"),
            certificate_arn=certificate_arn,
            github_repo=github_repo,
            alarm_email=text("alarm_email"),
            image_tag=text("image_tag"),
            allowed_cidr=allowed_cidr,
            github_oidc_provider_arn=text("github_oidc_provider_arn"),
            github_environment=github_environment,
            github_ref=github_ref,
            vllm_image=vllm_image,
            gateway_image=text("gateway_image"),
            gateway_base_image=pinned("gateway_base_image"),
            waf=switch("waf"),
            waf_block=waf_mode == "block",
            deletion_protection=switch("deletion_protection"),
        )


def store_of(plans: list[DeploymentPlan]) -> StoreLocation:
    """The one store every model's `s3://` source lives in (`<store>/models/<name>`, checked by the
    manifest). The stacks create its bucket and grant on its prefixes."""
    stores = {plan.store_uri for plan in plans}
    if len(stores) != 1 or None in stores:
        raise StackConfigError(
            f"model sources must all be s3:// URIs in one store (s3://bucket[/prefix]/models/<name>) to deploy; "
            f"found {sorted(str(s) for s in stores)} (upload local sources with `llmfleet model upload` first)"
        )
    return StoreLocation.parse(stores.pop())
