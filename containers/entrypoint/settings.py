"""The entrypoint's environment, read once in `main` and checked before anything starts."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import ValidationError

from model_store.errors import EXIT_REFUSED, LlmfleetError
from model_store.plan import DEFAULT_MODEL_ROOT, ServingPlan

# Ports the orchestrators expect: ECS task definitions map 8000; SageMaker requires 8080.
TARGET_PORTS = {"ecs": 8000, "sagemaker": 8080}
# A task's port is the service's: all interfaces. The local fleet binds loopback only.
DEFAULT_HOST = "0.0.0.0"  # noqa: S104
# Where SageMaker copies the model's ModelDataSource (models/<model>/<revision>/ of the
# store, `_manifest.json` included) before the container starts; read-only.
SAGEMAKER_MODEL_DIR = "/opt/ml/model"
DEFAULT_POLL_SECONDS = 10.0
# CloudWatch's standard resolution is one minute; more often only costs log volume.
DEFAULT_METRICS_SECONDS = 60.0


class EntrypointError(LlmfleetError):
    """The container cannot start or go on; the message says what, where and what to do."""

    exit_code = EXIT_REFUSED


@dataclass(frozen=True)
class EntrypointSettings:
    plan: ServingPlan
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
        raise EntrypointError(f"{name}={raw!r} is not a number; give seconds, e.g. {default:g}") from None
    if value < minimum:
        raise EntrypointError(f"{name}={raw!r} is below the minimum {minimum:g}")
    return value


def settings_from_env(env: Mapping[str, str]) -> EntrypointSettings:
    """Validate the container environment (see docs/container.md); raise EntrypointError."""
    plan_json = env.get("LLMFLEET_PLAN")
    if not plan_json:
        raise EntrypointError(
            "LLMFLEET_PLAN is not set: the container needs the model's ServingPlan as JSON "
            "(`llmfleet plan --json` prints it under models[].plan)"
        )
    try:
        plan = ServingPlan.from_json(plan_json)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'plan'}: {e['msg']}" for e in exc.errors()[:5])
        raise EntrypointError(f"LLMFLEET_PLAN is not a valid ServingPlan: {problems}") from None
    store_uri = env.get("LLMFLEET_STORE")
    if not store_uri or not store_uri.startswith("s3://") or len(store_uri) <= len("s3://"):
        raise EntrypointError(f"LLMFLEET_STORE={store_uri!r}: set it to the model store, s3://bucket[/prefix]")
    target = env.get("LLMFLEET_TARGET", "ecs")
    if target not in TARGET_PORTS:
        raise EntrypointError(f"LLMFLEET_TARGET={target!r}: allowed {sorted(TARGET_PORTS)}")
    port_text = env.get("LLMFLEET_PORT") or str(TARGET_PORTS[target])
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise EntrypointError(f"LLMFLEET_PORT={port_text!r}: a TCP port 1-65535")
    host = env.get("LLMFLEET_HOST") or DEFAULT_HOST
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    # The adapter agent reaches vLLM on loopback, and the middleware answers the runtime LoRA
    # routes to loopback callers only: vLLM must listen there.
    if address is None or address.version != 4 or not (address.is_unspecified or address.is_loopback):
        raise EntrypointError(f"LLMFLEET_HOST={host!r}: allowed 0.0.0.0 (all interfaces) or a loopback address 127.x.x.x")
    return EntrypointSettings(
        plan=plan,
        store_uri=store_uri,
        endpoint_url=env.get("AWS_ENDPOINT_URL") or None,
        model_root=env.get("LLMFLEET_MODEL_ROOT") or DEFAULT_MODEL_ROOT,
        preloaded_model_dir=(env.get("LLMFLEET_SAGEMAKER_MODEL_DIR") or SAGEMAKER_MODEL_DIR) if target == "sagemaker" else None,
        target=target,
        host=host,
        port=int(port_text),
        server_id=env.get("LLMFLEET_SERVER_ID") or socket.gethostname(),
        poll_seconds=_number(env, "LLMFLEET_POLL_SECONDS", DEFAULT_POLL_SECONDS, minimum=0.1),
        metrics_seconds=_number(env, "LLMFLEET_METRICS_SECONDS", DEFAULT_METRICS_SECONDS, minimum=1.0),
    )
