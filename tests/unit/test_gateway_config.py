"""The gateway's config from the example fleet's plans: every name routed, fallbacks, prices, policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmfleet.model_store.gateway.consumers import ConsumersFile
from llmfleet.model_store.planning.fleet import load_and_plan
from llmfleet.model_store.gateway.config import (
    gateway_config,
    GatewayConfig,
    GatewayConfigError,
    litellm_config,
    SageMakerUpstream,
)
from llmfleet.model_store.contract.manifest import FleetManifest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def example():
    fleet, plans = load_and_plan(REPO / "fleet.yaml")
    gateway = {
        "enabled": True,
        "fallbacks": {"r1-distill-14b": ["qwen25-7b-awq", "qwen3-small"]},
        "prices": {"qwen3-small": {"prompt_usd_per_million": 0.05, "completion_usd_per_million": 0.2}},
    }
    fleet = FleetManifest.model_validate({**fleet.model_dump(mode="json"), "gateway": gateway})
    return fleet, plans


def urls(plans) -> dict[str, str]:
    return {p.model_name: f"http://{p.model_name}.internal/v1" for p in plans if "ecs" in p.targets}


MISTRAL = {"mistral-small-24b-fp8": SageMakerUpstream(endpoint_name="demo-prod-mistral-small-24b-fp8", region="us-east-1")}


def consumers(*entries: dict) -> ConsumersFile:
    return ConsumersFile.model_validate({"consumers": list(entries)})


def test_every_model_adapter_and_wildcard_is_routed(example) -> None:
    fleet, plans = example
    config = gateway_config(fleet, plans, consumers(), ecs_base_urls=urls(plans), sagemaker_endpoints=MISTRAL)
    names = [r.name for r in config.routes]
    assert names == [
        "qwen3-small",
        "qwen3-small:medical",
        "qwen3-small:legal",
        "qwen3-small:finance",
        "qwen3-small:*",
        "r1-distill-14b",
        "mistral-small-24b-fp8",
        "llama3-70b",
        "qwen25-7b-awq",
    ]
    assert config.route("qwen3-small:medical").upstream_model == "medical"
    assert config.route("qwen3-small:promoted-later").name == "qwen3-small:*"
    assert config.route("r1-distill-14b:x") is None and config.route("gpt-4") is None
    assert config.upstreams["qwen3-small"].api_key_env == "LLMFLEET_UPSTREAM_KEY_QWEN3_SMALL"
    assert config.upstreams["mistral-small-24b-fp8"].kind == "sagemaker"
    assert config.fallbacks == {"r1-distill-14b": ["qwen25-7b-awq", "qwen3-small"]}
    assert GatewayConfig.from_json(config.to_json()) == config


def test_aliases_route_to_their_model(example) -> None:
    fleet, plans = example
    aliased = [p.model_copy(update={"aliases": ["Qwen/Qwen3-0.6B"]}) if p.model_name == "qwen3-small" else p for p in plans]
    config = gateway_config(fleet, aliased, consumers(), ecs_base_urls=urls(plans), sagemaker_endpoints=MISTRAL)
    alias = config.route("Qwen/Qwen3-0.6B")
    assert (alias.model, alias.upstream_model) == ("qwen3-small", "qwen3-small")


def test_missing_upstream_is_named(example) -> None:
    fleet, plans = example
    with pytest.raises(GatewayConfigError, match="model 'mistral-small-24b-fp8' is served on SageMaker but no endpoint"):
        gateway_config(fleet, plans, consumers(), ecs_base_urls=urls(plans))
    partial = {k: v for k, v in urls(plans).items() if k != "llama3-70b"}
    with pytest.raises(GatewayConfigError, match="model 'llama3-70b' is served on ECS but no load balancer URL"):
        gateway_config(fleet, plans, consumers(), ecs_base_urls=partial, sagemaker_endpoints=MISTRAL)


def test_a_budget_needs_a_price_for_every_model_it_may_call(example) -> None:
    fleet, plans = example
    priced = consumers({"name": "a", "models": ["qwen3-small", "qwen3-small:*"], "monthly_budget_usd": 5})
    config = gateway_config(fleet, plans, priced, ecs_base_urls=urls(plans), sagemaker_endpoints=MISTRAL)
    assert config.prices["qwen3-small"].source == "fleet.yaml gateway.prices"
    unpriced = consumers({"name": "b", "models": ["*"], "monthly_budget_usd": 5})
    with pytest.raises(GatewayConfigError, match=r"consumer 'b' has monthly_budget_usd 5 but model\(s\) \['llama3-70b', "):
        gateway_config(fleet, plans, unpriced, ecs_base_urls=urls(plans), sagemaker_endpoints=MISTRAL)


def test_allowed_routes_expand_wildcards(example) -> None:
    fleet, plans = example
    policy = consumers(
        {"name": "all", "models": ["*"]},
        {"name": "adapters", "models": ["qwen3-small:*"]},
        {"name": "one", "models": ["qwen3-small:medical", "qwen3-small:later"]},
    )
    config = gateway_config(fleet, plans, policy, ecs_base_urls=urls(plans), sagemaker_endpoints=MISTRAL)
    by_name = {c.name: config.allowed_routes(c) for c in config.consumers}
    assert by_name["all"] == [r.name for r in config.routes]
    assert by_name["adapters"] == ["qwen3-small:medical", "qwen3-small:legal", "qwen3-small:finance", "qwen3-small:*"]
    assert by_name["one"] == ["qwen3-small:medical", "qwen3-small:later"]


def test_litellm_config_names_every_route_and_its_upstream(example) -> None:
    fleet, plans = example
    config = gateway_config(fleet, plans, consumers(), ecs_base_urls=urls(plans), sagemaker_endpoints=MISTRAL)
    rendered = litellm_config(config, callbacks=["x.logger"], custom_auth="x.auth")
    by_name = {m["model_name"]: m["litellm_params"] for m in rendered["model_list"]}
    assert list(by_name) == [r.name for r in config.routes]
    assert by_name["qwen3-small:medical"] == {
        "model": "hosted_vllm/medical",
        "api_base": "http://qwen3-small.internal/v1",
        "api_key": "os.environ/LLMFLEET_UPSTREAM_KEY_QWEN3_SMALL",
    }
    assert by_name["qwen3-small:*"]["model"] == "hosted_vllm/*"
    assert by_name["mistral-small-24b-fp8"] == {"model": "sagemaker_chat/demo-prod-mistral-small-24b-fp8", "aws_region_name": "us-east-1"}
    assert rendered["router_settings"]["fallbacks"] == [{"r1-distill-14b": ["qwen25-7b-awq", "qwen3-small"]}]
    assert rendered["general_settings"]["custom_auth"] == "x.auth"
    assert rendered["general_settings"]["enable_post_custom_auth_checks"] is False
    # LiteLLM's router keeps nothing in Redis: a round trip per request the plug-ins do not need.
    assert "redis_url" not in rendered["router_settings"] and rendered["litellm_settings"]["cache"] is False
    assert rendered["litellm_settings"]["disable_end_user_cost_tracking"] is True


def test_fallbacks_keep_only_models_given(example) -> None:
    fleet, plans = example
    some = [p for p in plans if p.model_name in ("r1-distill-14b", "qwen3-small")]
    config = gateway_config(fleet, some, consumers(), ecs_base_urls=urls(plans))
    assert config.fallbacks == {"r1-distill-14b": ["qwen3-small"]}
    alone = gateway_config(fleet, some[:1], consumers(), ecs_base_urls=urls(plans))
    assert alone.fallbacks == {}
