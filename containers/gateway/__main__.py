"""The gateway container's entrypoint: render LiteLLM's config from LLMFLEET_GATEWAY_CONFIG, then
run LiteLLM's proxy in this process (the orchestrator's signals reach it) with the front door
(auth.FrontDoor) wrapped around its app."""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
from pathlib import Path

from llmfleet.model_store.gateway.config import GatewayConfig, litellm_config, render_json
from llmfleet.model_store.gateway.contract import (
    CONFIG_ENV,
    GATEWAY_HOST_ENV,
    GATEWAY_PORT,
    GATEWAY_PORT_ENV,
    KEYS_SECRET_ENV,
    REDIS_URL_ENV,
)

PLUGINS = "llmfleet.containers.gateway"
MASTER_KEY_ENV = "LITELLM_MASTER_KEY"


def proxy_argv(config_path: Path, host: str, port: int) -> list[str]:
    """LiteLLM's proxy on one worker (the task is sized in tasks, not workers)."""
    return [sys.executable, "-m", "litellm.proxy.proxy_cli", "--config", str(config_path), "--host", host,
            "--port", str(port), "--num_workers", "1"]


def main(env: dict[str, str]) -> list[str]:
    """Write LiteLLM's config and return the proxy's argv; a missing variable is named."""
    missing = [name for name in (CONFIG_ENV, KEYS_SECRET_ENV) if not env.get(name)]
    if missing:
        raise SystemExit(f"gateway: missing environment {missing}")
    config = GatewayConfig.from_json(env[CONFIG_ENV])
    if not env.get(REDIS_URL_ENV) and any(c.rpm or c.tpm or c.monthly_budget_usd for c in config.consumers):
        raise SystemExit(f"gateway: consumers have limits or budgets but {REDIS_URL_ENV} is not set")
    rendered = litellm_config(
        config,
        callbacks=[f"{PLUGINS}.usage.usage_logger"],
        custom_auth=f"{PLUGINS}.auth.user_api_key_auth",
    )
    directory = Path(tempfile.mkdtemp(prefix="llmfleet-gateway-"))
    path = directory / "litellm.yaml"
    path.write_text(render_json(rendered))
    return proxy_argv(path, env.get(GATEWAY_HOST_ENV, "0.0.0.0"), int(env.get(GATEWAY_PORT_ENV, GATEWAY_PORT)))  # noqa: S104


def proxy_env(env: dict[str, str]) -> dict[str, str]:
    """LiteLLM refuses to start without a master key; every request is checked by our custom auth
    instead, so the key is random, per process, and known to no one: LiteLLM's admin routes stay shut."""
    return {
        **env,
        MASTER_KEY_ENV: "sk-" + secrets.token_hex(32),
        # LiteLLM fetches its model-price map from the internet at import unless told to use its own copy.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        # A line per request at INFO costs CPU on the hot path; refusals and errors still log.
        "LITELLM_LOG": env.get("LITELLM_LOG", "ERROR"),
    }


def serve(argv: list[str]) -> None:
    """LiteLLM's proxy CLI (argv from main) in this process, its app behind the front door; the
    environment must be proxy_env's before LiteLLM is imported."""
    from litellm.proxy.proxy_cli import run_server
    from litellm.proxy.proxy_server import app

    from llmfleet.containers.gateway.auth import FrontDoor

    # Outermost of the app's middleware: the key and the size are checked before LiteLLM's own.
    app.add_middleware(FrontDoor)
    run_server.main(args=argv[3:], prog_name="litellm")


if __name__ == "__main__":
    argv = main(dict(os.environ))
    os.environ.update(proxy_env(dict(os.environ)))
    serve(argv)
