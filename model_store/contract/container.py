"""The container contract: the environment the stacks, the local fleet and the stand-in write
(`container_env`) and the entrypoint reads (`containers/entrypoint/settings.py:
settings_from_env`).

Each `LLMFLEET_*` name is a constant here that both sides import, so writers and reader cannot
drift apart (tests/unit/test_entrypoint_settings.py holds the round trip). It lives in
model_store because the stacks, the CLI and the container all may import model_store.
"""

from __future__ import annotations

from llmfleet.model_store.contract.plan import DeploymentPlan
from llmfleet.model_store.contract.targets import SAGEMAKER, TARGETS

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
COMPILE_CACHE_ENV = "LLMFLEET_COMPILE_CACHE"  # "on" (default) or "off": restore and publish vLLM's compile cache
# Set by the entrypoint for its vLLM child, where the middleware reads it (vllm_command.py).
STATE_DIR_ENV = "LLMFLEET_STATE_DIR"
# Read by the CLI, not the container; named here so every LLMFLEET_ name has one home.
API_KEY_ENV = "LLMFLEET_API_KEY"
FLEET_ENV = "LLMFLEET_FLEET"  # the fleet manifest when --fleet/-f is not given (else ./fleet.yaml)
# vLLM's own name for the server's key: the stacks' secret and the local fleet set it, vLLM and
# the entrypoint's front door (middleware, image server) read it.
VLLM_API_KEY_ENV = "VLLM_API_KEY"
# The port each target's orchestrator sends traffic to (contract/targets.py).
TARGET_PORTS = {name: row.port for name, row in TARGETS.items()}
# A task's port is the service's: all interfaces. The local fleet binds loopback only.
DEFAULT_HOST = "0.0.0.0"  # noqa: S104
# Where SageMaker copies the model's ModelDataSource (models/<model>/<revision>/ of the
# store, `_manifest.json` included) before the container starts; read-only.
SAGEMAKER_MODEL_DIR = SAGEMAKER.model_dir
DEFAULT_POLL_SECONDS = 10.0
# The container's exit codes besides vLLM's own (docs/container.md), each the `exit_code` of its
# error class; plan or environment unusable is the CLI's EXIT_BAD_INPUT (2).
EXIT_STORE = 3  # the store stayed unreachable, or the model failed verification
EXIT_ARGV = 4  # vLLM's parser refused the argv built from the plan
# CloudWatch's standard resolution is one minute; more often only costs log volume.
DEFAULT_METRICS_SECONDS = 60.0


def container_env(
    plan: DeploymentPlan,
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
    compile_cache: bool | None = None,
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
        COMPILE_CACHE_ENV: None if compile_cache is None else ("on" if compile_cache else "off"),
    }
    return {
        PLAN_ENV: plan.to_json(),
        STORE_ENV: store_uri,
        TARGET_ENV: target,
        **{name: str(value) for name, value in optional.items() if value is not None},
    }
