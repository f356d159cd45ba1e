"""The entrypoint's reading of the container contract (model_store/contract/container.py):
the environment, validated once in `main` (`settings_from_env`)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import ValidationError

from llmfleet.model_store.contract.container import (
    COMPILE_CACHE_ENV,
    DEFAULT_HOST,
    DEFAULT_METRICS_SECONDS,
    DEFAULT_POLL_SECONDS,
    ENDPOINT_URL_ENV,
    EXIT_STORE,
    HOST_ENV,
    METRICS_SECONDS_ENV,
    MODEL_ROOT_ENV,
    PLAN_ENV,
    POLL_SECONDS_ENV,
    PORT_ENV,
    SAGEMAKER_MODEL_DIR_ENV,
    SERVER_ID_ENV,
    STORE_ENV,
    TARGET_ENV,
)
from llmfleet.model_store.contract.targets import DEFAULT_TARGET, TARGETS
from llmfleet.model_store.errors import EXIT_BAD_INPUT, LlmfleetError
from llmfleet.model_store.contract.plan import AnyPlan, DEFAULT_MODEL_ROOT, plan_from_json

class EntrypointError(LlmfleetError):
    """The container cannot start or go on: the store stayed unreachable, or what it holds failed
    verification; the message says what, where and what to do."""

    exit_code = EXIT_STORE


class EnvironmentRefused(EntrypointError):
    """The container's environment (plan, store, target, port...) is unusable: fix the task definition."""

    exit_code = EXIT_BAD_INPUT


@dataclass(frozen=True)
class EntrypointSettings:
    plan: AnyPlan  # ServingPlan (vLLM) or ImagePlan (the image server)
    store_uri: str
    endpoint_url: str | None
    model_root: str
    preloaded_model_dir: str | None  # a copy of the revision to verify and serve (SageMaker), if there
    target: str
    host: str
    port: int
    server_id: str
    poll_seconds: float
    metrics_seconds: float
    compile_cache: bool  # restore vLLM's compile cache from the store, publish it once healthy

    @property
    def local_address(self) -> str:
        """Where the entrypoint itself reaches vLLM: loopback, on the address vLLM binds."""
        return self.host if ipaddress.ip_address(self.host).is_loopback else "127.0.0.1"


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise EnvironmentRefused(f"{name}={raw!r} is not a number; give seconds, e.g. {default:g}") from None
    if value < minimum:
        raise EnvironmentRefused(f"{name}={raw!r} is below the minimum {minimum:g}")
    return value


def settings_from_env(env: Mapping[str, str]) -> EntrypointSettings:
    """Validate the container environment (see docs/container.md); raise EnvironmentRefused."""
    plan_json = env.get(PLAN_ENV)
    if not plan_json:
        raise EnvironmentRefused(
            f"{PLAN_ENV} is not set: the container needs the model's ServingPlan as JSON "
            "(`llmfleet plan --json` prints it under models[].plan)"
        )
    try:
        plan = plan_from_json(plan_json)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'plan'}: {e['msg']}" for e in exc.errors()[:5])
        raise EnvironmentRefused(f"{PLAN_ENV} is not a valid ServingPlan: {problems}") from None
    store_uri = env.get(STORE_ENV)
    if not store_uri or not store_uri.startswith("s3://") or len(store_uri) <= len("s3://"):
        raise EnvironmentRefused(f"{STORE_ENV}={store_uri!r}: set it to the model store, s3://bucket[/prefix]")
    target = env.get(TARGET_ENV, DEFAULT_TARGET)
    if target not in TARGETS:
        raise EnvironmentRefused(f"{TARGET_ENV}={target!r}: allowed {sorted(TARGETS)}")
    row = TARGETS[target]
    port_text = env.get(PORT_ENV) or str(row.port)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise EnvironmentRefused(f"{PORT_ENV}={port_text!r}: a TCP port 1-65535")
    host = env.get(HOST_ENV) or DEFAULT_HOST
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    # The adapter agent reaches vLLM on loopback, and the middleware answers the runtime LoRA
    # routes to loopback callers only: vLLM must listen there.
    if address is None or address.version != 4 or not (address.is_unspecified or address.is_loopback):
        raise EnvironmentRefused(f"{HOST_ENV}={host!r}: allowed 0.0.0.0 (all interfaces) or a loopback address 127.x.x.x")
    compile_cache = env.get(COMPILE_CACHE_ENV) or "on"
    if compile_cache not in ("on", "off"):
        raise EnvironmentRefused(f"{COMPILE_CACHE_ENV}={compile_cache!r}: allowed 'on' (default) or 'off'")
    return EntrypointSettings(
        plan=plan,
        store_uri=store_uri,
        endpoint_url=env.get(ENDPOINT_URL_ENV) or None,
        model_root=env.get(MODEL_ROOT_ENV) or DEFAULT_MODEL_ROOT,
        preloaded_model_dir=(env.get(SAGEMAKER_MODEL_DIR_ENV) or row.model_dir) if row.model_dir else None,
        target=target,
        host=host,
        port=int(port_text),
        server_id=env.get(SERVER_ID_ENV) or socket.gethostname(),
        poll_seconds=_number(env, POLL_SECONDS_ENV, DEFAULT_POLL_SECONDS, minimum=0.1),
        metrics_seconds=_number(env, METRICS_SECONDS_ENV, DEFAULT_METRICS_SECONDS, minimum=1.0),
        compile_cache=compile_cache == "on",
    )
