"""The container contract: the environment the stacks and the local fleet write
(`container_env`) and the entrypoint reads once in `main` (`settings_from_env`).

Each `LLMFLEET_*` name is a constant here that other modules import, so the writers and the
reader cannot drift apart (tests/unit/test_entrypoint_settings.py holds the round trip).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import ValidationError

from model_store.plan import DEFAULT_MODEL_ROOT, ServingPlan

PLAN_ENV = "LLMFLEET_PLAN"
STORE_ENV = "LLMFLEET_STORE"  # also the CLI's default for --store
ENDPOINT_URL_ENV = "AWS_ENDPOINT_URL"  # boto3's own name: the local fleet's emulated S3
TARGET_ENV = "LLMFLEET_TARGET"
HOST_ENV = "LLMFLEET_HOST"
PORT_ENV = "LLMFLEET_PORT"
MODEL_ROOT_ENV = "LLMFLEET_MODEL_ROOT"
SAGEMAKER_MODEL_DIR_ENV = "LLMFLEET_SAGEMAKER_MODEL_DIR"
SERVER_ID_ENV = "LLMFLEET_SERVER_ID"
POLL_SECONDS_ENV = "LLMFLEET_POLL_SECONDS"
METRICS_SECONDS_ENV = "LLMFLEET_METRICS_SECONDS"
# Set by the entrypoint for its vLLM child, where the middleware reads it (vllm_command.py).
STATE_DIR_ENV = "LLMFLEET_STATE_DIR"
# Read by the CLI, not the container; named here so every LLMFLEET_ name has one home.
API_KEY_ENV = "LLMFLEET_API_KEY"

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


class EntrypointError(Exception):
    """The container cannot start or go on; the message says what, where and what to do."""


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


def container_env(
    plan: ServingPlan,
    store_uri: str,
    target: str,
    *,
    endpoint_url: str | None = None,
    model_root: str | None = None,
    host: str | None = None,
    port: int | None = None,
    server_id: str | None = None,
    poll_seconds: float | None = None,
    metrics_seconds: float | None = None,
) -> dict[str, str]:
    """The environment that makes `settings_from_env` read back these values; one left None
    is not written, so the entrypoint's default applies (see docs/container.md)."""
    optional = {
        ENDPOINT_URL_ENV: endpoint_url,
        MODEL_ROOT_ENV: model_root,
        HOST_ENV: host,
        PORT_ENV: port,
        SERVER_ID_ENV: server_id,
        POLL_SECONDS_ENV: poll_seconds,
        METRICS_SECONDS_ENV: metrics_seconds,
    }
    return {
        PLAN_ENV: plan.to_json(),
        STORE_ENV: store_uri,
        TARGET_ENV: target,
        **{name: str(value) for name, value in optional.items() if value is not None},
    }


def settings_from_env(env: Mapping[str, str]) -> EntrypointSettings:
    """Validate the container environment (see docs/container.md); raise EntrypointError."""
    plan_json = env.get(PLAN_ENV)
    if not plan_json:
        raise EntrypointError(
            f"{PLAN_ENV} is not set: the container needs the model's ServingPlan as JSON "
            "(`llmfleet plan --json` prints it under models[].plan)"
        )
    try:
        plan = ServingPlan.from_json(plan_json)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'plan'}: {e['msg']}" for e in exc.errors()[:5])
        raise EntrypointError(f"{PLAN_ENV} is not a valid ServingPlan: {problems}") from None
    store_uri = env.get(STORE_ENV)
    if not store_uri or not store_uri.startswith("s3://") or len(store_uri) <= len("s3://"):
        raise EntrypointError(f"{STORE_ENV}={store_uri!r}: set it to the model store, s3://bucket[/prefix]")
    target = env.get(TARGET_ENV, "ecs")
    if target not in TARGET_PORTS:
        raise EntrypointError(f"{TARGET_ENV}={target!r}: allowed {sorted(TARGET_PORTS)}")
    port_text = env.get(PORT_ENV) or str(TARGET_PORTS[target])
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise EntrypointError(f"{PORT_ENV}={port_text!r}: a TCP port 1-65535")
    host = env.get(HOST_ENV) or DEFAULT_HOST
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    # The adapter agent reaches vLLM on loopback, and the middleware answers the runtime LoRA
    # routes to loopback callers only: vLLM must listen there.
    if address is None or address.version != 4 or not (address.is_unspecified or address.is_loopback):
        raise EntrypointError(f"{HOST_ENV}={host!r}: allowed 0.0.0.0 (all interfaces) or a loopback address 127.x.x.x")
    return EntrypointSettings(
        plan=plan,
        store_uri=store_uri,
        endpoint_url=env.get(ENDPOINT_URL_ENV) or None,
        model_root=env.get(MODEL_ROOT_ENV) or DEFAULT_MODEL_ROOT,
        preloaded_model_dir=(env.get(SAGEMAKER_MODEL_DIR_ENV) or SAGEMAKER_MODEL_DIR) if target == "sagemaker" else None,
        target=target,
        host=host,
        port=int(port_text),
        server_id=env.get(SERVER_ID_ENV) or socket.gethostname(),
        poll_seconds=_number(env, POLL_SECONDS_ENV, DEFAULT_POLL_SECONDS, minimum=0.1),
        metrics_seconds=_number(env, METRICS_SECONDS_ENV, DEFAULT_METRICS_SECONDS, minimum=1.0),
    )
