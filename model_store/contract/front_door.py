"""Who may call which path of a serving container. Pure.

One allowlist for both doors: the container's middleware (and the image server) refuse a
path that is not on it, and the ECS load balancer's listener rules are generated from it
(stacks/gpu_service.py), so the two cannot drift apart. vLLM's own `--api-key` guards only
paths under `/v1`; everything else it serves (`/metrics`, `/tokenize`, `/pause`, the runtime
LoRA routes, `/invocations`, ...) is open unless something in front refuses it
(../docs/container.md, "Trust boundaries").
"""

from __future__ import annotations

from enum import StrEnum

from llmfleet.model_store.contract.kinds import IMAGE, TEXT, kind
from llmfleet.model_store.contract.targets import target as serving_target


class Access(StrEnum):
    """Who may call a path."""

    PUBLIC = "public"  # anyone: the load balancer's and SageMaker's health checks
    KEY = "key"  # a client with the API key; the load balancer forwards these
    KEY_OR_LOOPBACK = "key-or-loopback"  # the server's self-description: the API key, or this container itself
    SAGEMAKER = "sagemaker"  # only on the SageMaker target, whose signed runtime API is the door
    LOOPBACK = "loopback"  # this container's own processes only (the adapter agent, the metrics publisher)


ADAPTERS_PATH = "/llmfleet/adapters"
METRICS_PATH = "/metrics"
INVOCATIONS_PATH = "/invocations"
HEALTH_PATHS = ("/health", "/ping")
TEXT_CLIENT_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/embeddings")
IMAGE_CLIENT_PATHS = ("/v1/images/generations", "/v1/models")
# vLLM's runtime LoRA routes and SageMaker's adapter-management routes (vLLM 0.32 route list).
ADMIN_PATHS = ("/v1/load_lora_adapter", "/v1/unload_lora_adapter", "/adapters")
ADMIN_PREFIXES = ("/adapters/",)
# The server's self-description: the load balancer forwards it (`llmfleet status`), the key guards it.
OPERATIONAL_PATHS = (ADAPTERS_PATH,)
# Scraped by the entrypoint's metrics publisher over loopback; never forwarded, so a remote
# caller reaches exactly what the load balancer forwards, key or not.
LOOPBACK_PATHS = (METRICS_PATH,)
# vLLM routes the load balancer answers 403 before any forward rule (vLLM 0.32 api_server):
# they stay closed even if a broader forward rule is added later.
VLLM_ADMIN_PATHS = (
    "/v1/load_lora_adapter",
    "/v1/unload_lora_adapter",
    "/metrics",
    "/tokenize",
    "/detokenize",
    "/pause",
    "/resume",
    "/update_weights",
    "/invocations",
    "/ping",
    "/health",
    "/reset_prefix_cache",
    "/sleep",
    "/wake_up",
    "/is_sleeping",
    "/collective_rpc",
    "/start_profile",
    "/stop_profile",
    "/scale_elastic_ep",
    "/server_info",
)
CLIENT_PATHS = {TEXT.name: TEXT_CLIENT_PATHS, IMAGE.name: IMAGE_CLIENT_PATHS}


def client_paths(name: str) -> tuple[str, ...]:
    """The client API of a model kind: what a caller with the API key may reach."""
    return CLIENT_PATHS[kind(name).name]


def forwarded_paths(kind: str) -> tuple[str, ...]:
    """What the load balancer forwards to a server of `kind`: the client API and the server's
    self-description (which still needs the key); nothing else leaves the VPC's edge."""
    return (*client_paths(kind), ADAPTERS_PATH)


def is_admin_path(path: str) -> bool:
    return path in ADMIN_PATHS or path.startswith(ADMIN_PREFIXES)


def path_access(path: str, *, kind: str, target: str) -> Access | None:
    """Who may call `path` on a server of `kind` on `target`; None: nobody but this container
    itself (the middleware answers 404 to any other caller)."""
    row = serving_target(target)
    if is_admin_path(path) or path in LOOPBACK_PATHS:
        return Access.LOOPBACK
    if path in HEALTH_PATHS:
        return Access.PUBLIC
    if path in client_paths(kind):
        return Access.KEY
    if path in OPERATIONAL_PATHS:
        return Access.KEY_OR_LOOPBACK
    if path == INVOCATIONS_PATH and row.invocations:
        return Access.SAGEMAKER
    return None


def allowed(access: Access | None, *, loopback: bool, has_key: bool) -> bool:
    """Whether a caller may go on to `access`'s path: from loopback (`loopback`), holding the
    API key (`has_key`: checked by the caller, constant-time, before any body is read)."""
    if loopback:
        return access is not Access.KEY or has_key
    if access in (Access.PUBLIC, Access.SAGEMAKER):
        return True
    if access in (Access.KEY, Access.KEY_OR_LOOPBACK):
        return has_key
    return False


__all__ = [
    "ADAPTERS_PATH",
    "Access",
    "HEALTH_PATHS",
    "IMAGE_CLIENT_PATHS",
    "TEXT_CLIENT_PATHS",
    "VLLM_ADMIN_PATHS",
    "allowed",
    "client_paths",
    "forwarded_paths",
    "is_admin_path",
    "path_access",
]
