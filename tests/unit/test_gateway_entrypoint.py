"""The gateway entrypoint renders LiteLLM's config from the contract's environment, or names what is missing."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import yaml

from llmfleet.containers.gateway.__main__ import main, proxy_env
from llmfleet.model_store.gateway.consumers import Consumer
from llmfleet.model_store.gateway.config import GatewayConfig, OpenAIUpstream, Route
from llmfleet.model_store.gateway.contract import CONFIG_ENV, GATEWAY_PORT, KEYS_SECRET_ENV, REDIS_URL_ENV

REPO = Path(__file__).resolve().parents[2]


def config(**consumer) -> str:
    upstream = OpenAIUpstream(base_url="http://m/v1", api_key_env="LLMFLEET_UPSTREAM_KEY_M")
    return GatewayConfig(
        fleet="demo", stage="prod", upstreams={"m": upstream}, routes=[Route(name="m", model="m", upstream_model="m")],
        fallbacks={}, prices={}, consumers=[Consumer(name="c", models=["*"], **consumer)],
    ).to_json()


def test_renders_litellm_config_naming_plugins_that_exist() -> None:
    argv = main({CONFIG_ENV: config(), KEYS_SECRET_ENV: "s"})
    assert argv[1:3] == ["-m", "litellm.proxy.proxy_cli"] and argv[argv.index("--port") + 1] == str(GATEWAY_PORT)
    rendered = yaml.safe_load(Path(argv[argv.index("--config") + 1]).read_text())
    assert [m["model_name"] for m in rendered["model_list"]] == ["m"]
    for dotted in (rendered["general_settings"]["custom_auth"], *rendered["litellm_settings"]["callbacks"]):
        module, name = dotted.removeprefix("llmfleet.").rsplit(".", 1)
        tree = ast.parse((REPO / (module.replace(".", "/") + ".py")).read_text())
        assert name in {n.name for n in tree.body if hasattr(n, "name")} | {
            t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)
        }


def test_missing_environment_is_named() -> None:
    with pytest.raises(SystemExit, match=r"missing environment \['LLMFLEET_GATEWAY_KEYS_SECRET'\]"):
        main({CONFIG_ENV: config()})
    with pytest.raises(SystemExit, match=f"consumers have limits or budgets but {REDIS_URL_ENV} is not set"):
        main({CONFIG_ENV: config(rpm=5), KEYS_SECRET_ENV: "s"})


def test_master_key_is_random_per_process() -> None:
    first, second = proxy_env({}), proxy_env({})
    assert first["LITELLM_MASTER_KEY"] != second["LITELLM_MASTER_KEY"]
    assert first["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    assert json.dumps(first)  # strings only: an exec environment
