"""The gateway's configuration, derived from the plans: routes, fallbacks, prices and consumers'
policy (`LLMFLEET_GATEWAY_CONFIG`), and the LiteLLM proxy config the container renders from it. Pure.

Client-facing names: a model's name, its aliases, `<model>:<adapter>` for each adapter of the
manifest and `<model>:*` for those promoted later (vLLM serves an adapter under its own name,
so `qwen3-small:medical` reaches `medical` on qwen3-small's servers).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llmfleet.model_store.gateway.consumers import ADAPTER_SEPARATOR, ALL_MODELS, Consumer, ConsumersFile
from llmfleet.model_store.errors import EXIT_BAD_INPUT, LlmfleetError
from llmfleet.model_store.gateway.contract import upstream_key_env
from llmfleet.model_store.contract.plan import AnyPlan, ServingPlan
from llmfleet.model_store.contract.manifest import FleetManifest
from llmfleet.model_store.contract.targets import ECS


class GatewayConfigError(LlmfleetError):
    """A gateway that cannot be configured from this fleet; the message names the model and what to set."""

    exit_code = EXIT_BAD_INPUT


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OpenAIUpstream(_Frozen):
    """A model's (internal) load balancer, an OpenAI-compatible vLLM server behind it."""

    kind: Literal["openai"] = "openai"
    base_url: str = Field(description="http://<load balancer>/v1 (a CDK token inside the string in a stack).")
    api_key_env: str = Field(description="The env var holding the model's API key (an ECS secret).")


class SageMakerUpstream(_Frozen):
    """A SageMaker endpoint, called with SigV4 by the task role."""

    kind: Literal["sagemaker"] = "sagemaker"
    endpoint_name: str
    region: str
    inference_component: str | None = Field(default=None, description="Named on every call of a scale-to-zero endpoint.")


Upstream = Annotated[OpenAIUpstream | SageMakerUpstream, Field(discriminator="kind")]


class Route(_Frozen):
    """One name a client may put in `model`."""

    name: str
    model: str = Field(description="The fleet model serving it.")
    upstream_model: str = Field(description="What the upstream calls it: the served model, an adapter, or '*'.")
    adapter: str | None = Field(default=None, description="The adapter, or '*' for any adapter of the model.")
    kind: Literal["text", "image"] = "text"


class Price(_Frozen):
    prompt_usd_per_million: float
    completion_usd_per_million: float
    source: str


class GatewayConfig(_Frozen):
    """Everything the gateway container needs but the keys (LLMFLEET_GATEWAY_CONFIG)."""

    fleet: str
    stage: str
    upstreams: dict[str, Upstream]
    routes: list[Route]
    fallbacks: dict[str, list[str]]
    prices: dict[str, Price]
    consumers: list[Consumer]

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> GatewayConfig:
        return cls.model_validate_json(text)

    def route(self, name: str) -> Route | None:
        """The route a client's `model` takes: an exact name, else a model's adapter wildcard."""
        for route in self.routes:
            if route.name == name:
                return route
        model, separator, adapter = name.partition(ADAPTER_SEPARATOR)
        wildcard = f"{model}{ADAPTER_SEPARATOR}*"
        return next((r for r in self.routes if separator and adapter and r.name == wildcard), None)

    def allowed_routes(self, consumer: Consumer) -> list[str]:
        """The route names (wildcards included) a consumer's `models` list opens."""
        if ALL_MODELS in consumer.models:
            return [route.name for route in self.routes]
        opened = []
        for route in self.routes:
            if route.name in consumer.models:
                opened.append(route.name)
            elif route.adapter is not None and route.adapter != "*" and f"{route.model}{ADAPTER_SEPARATOR}*" in consumer.models:
                opened.append(route.name)
        # '<model>:<adapter>' for an adapter promoted later is reached through the model's wildcard route.
        return opened + [name for name in consumer.models if name not in opened and ADAPTER_SEPARATOR in name]


def _upstream(
    plan: AnyPlan, ecs_base_urls: Mapping[str, str], sagemaker_endpoints: Mapping[str, SageMakerUpstream]
) -> OpenAIUpstream | SageMakerUpstream:
    """ECS when the model is served there (its load balancer), else its SageMaker endpoint."""
    if ECS.name in plan.targets:
        if plan.model_name not in ecs_base_urls:
            raise GatewayConfigError(f"model {plan.model_name!r} is served on ECS but no load balancer URL was given for it")
        return OpenAIUpstream(base_url=ecs_base_urls[plan.model_name], api_key_env=upstream_key_env(plan.model_name))
    if plan.model_name not in sagemaker_endpoints:
        raise GatewayConfigError(f"model {plan.model_name!r} is served on SageMaker but no endpoint was given for it")
    return sagemaker_endpoints[plan.model_name]


def _routes(plan: AnyPlan, upstream: OpenAIUpstream | SageMakerUpstream) -> list[Route]:
    name = plan.model_name
    routes = [Route(name=name, model=name, upstream_model=name, kind=plan.kind)]
    if not isinstance(plan, ServingPlan):
        return routes
    routes += [Route(name=alias, model=name, upstream_model=name) for alias in plan.aliases if alias != name]
    # SageMaker picks an adapter by a header, not `model`: adapters are routed through ECS only.
    if plan.lora_max_rank is not None and isinstance(upstream, OpenAIUpstream):
        routes += [
            Route(name=f"{name}{ADAPTER_SEPARATOR}{a.name}", model=name, upstream_model=a.name, adapter=a.name)
            for a in plan.adapters
        ]
        routes.append(Route(name=f"{name}{ADAPTER_SEPARATOR}*", model=name, upstream_model="*", adapter="*"))
    return routes


def _price(fleet: FleetManifest, plan: AnyPlan) -> Price | None:
    """The manifest's price, else the plan's predicted $ per million output tokens (prompt tokens free:
    prefill runs batched, at a small fraction of decoding's GPU time), else none (budgets cannot count it)."""
    given = fleet.gateway.prices.get(plan.model_name)
    if given is not None:
        return Price(**given.model_dump(), source="fleet.yaml gateway.prices")
    performance = getattr(plan, "performance", None)
    if performance is not None:
        return Price(
            prompt_usd_per_million=0.0,
            completion_usd_per_million=performance.usd_per_million_output_tokens,
            source=f"plan: {plan.instance_type} ${plan.cost_per_hour_usd:.2f}/h at its predicted output tokens/s",
        )
    return None


def gateway_config(
    fleet: FleetManifest,
    plans: Sequence[AnyPlan],
    consumers: ConsumersFile,
    *,
    ecs_base_urls: Mapping[str, str],
    sagemaker_endpoints: Mapping[str, SageMakerUpstream] | None = None,
) -> GatewayConfig:
    """The gateway's config for these plans. `ecs_base_urls` maps each ECS model to its load
    balancer's `/v1` URL; `sagemaker_endpoints` each SageMaker-only model to its endpoint."""
    upstreams = {p.model_name: _upstream(p, ecs_base_urls, sagemaker_endpoints or {}) for p in plans}
    routes = [route for p in plans for route in _routes(p, upstreams[p.model_name])]
    prices = {p.model_name: price for p in plans if (price := _price(fleet, p)) is not None}
    config = GatewayConfig(
        fleet=fleet.name,
        stage=plans[0].stage if plans else fleet.stage,
        upstreams=upstreams,
        routes=routes,
        fallbacks=_fallbacks(fleet, upstreams),
        prices=prices,
        consumers=consumers.consumers,
    )
    _check_budgets(config)
    return config


def _fallbacks(fleet: FleetManifest, upstreams: Mapping[str, object]) -> dict[str, list[str]]:
    """The manifest's fallbacks among the models given (the local fleet serves one of them)."""
    kept = {model: [f for f in to if f in upstreams] for model, to in fleet.gateway.fallbacks.items() if model in upstreams}
    return {model: to for model, to in kept.items() if to}


def _check_budgets(config: GatewayConfig) -> None:
    """A budget must be able to count every model its consumer may call."""
    for consumer in config.consumers:
        if consumer.monthly_budget_usd is None:
            continue
        models = {config.route(name).model for name in config.allowed_routes(consumer) if config.route(name)}
        unpriced = sorted(models - set(config.prices))
        if unpriced:
            raise GatewayConfigError(
                f"consumer {consumer.name!r} has monthly_budget_usd {consumer.monthly_budget_usd:g} but model(s) "
                f"{unpriced} have no price: set gateway.prices.<model> in the fleet manifest, or give the model a `load` "
                "(the plan then predicts its $ per million tokens)"
            )


# --- the LiteLLM proxy's config -----------------------------------------------------------------


def _litellm_params(route: Route, upstream: OpenAIUpstream | SageMakerUpstream) -> dict[str, Any]:
    if isinstance(upstream, SageMakerUpstream):
        params: dict[str, Any] = {
            "model": f"sagemaker_chat/{upstream.endpoint_name}",
            "aws_region_name": upstream.region,
        }
        if upstream.inference_component:
            params["model_id"] = upstream.inference_component
        return params
    # hosted_vllm: LiteLLM's provider for vLLM's OpenAI server; vLLM's own sampling parameters
    # (top_k, min_p, repetition_penalty, structured outputs...) are passed through to it.
    return {
        "model": f"hosted_vllm/{route.upstream_model}",
        "api_base": upstream.base_url,
        "api_key": f"os.environ/{upstream.api_key_env}",
    }


def litellm_config(config: GatewayConfig, *, callbacks: Sequence[str], custom_auth: str) -> dict[str, Any]:
    """LiteLLM's proxy config (config mode, no database of its own) for `config`, at its cheapest per
    request: LiteLLM keeps nothing in Redis (limits, budgets and usage are the plug-ins' own, which
    reach Redis themselves), no response cache, no message logging, no end-user cost tracking."""
    model_list = [
        {
            "model_name": route.name,
            "litellm_params": _litellm_params(route, config.upstreams[route.model]),
            "model_info": {"id": route.name, "llmfleet_model": route.model, "llmfleet_adapter": route.adapter},
        }
        for route in config.routes
    ]
    router_settings: dict[str, Any] = {
        "fallbacks": [{model: to} for model, to in config.fallbacks.items()],
        # One deployment per name: a failure is retried on a fallback, not on the same server.
        "num_retries": 0,
    }
    litellm_settings: dict[str, Any] = {
        "callbacks": list(callbacks),
        "drop_params": False,
        "num_retries": 0,
        # Prompts and answers stay out of the logging payload: the usage rows need counts only.
        "turn_off_message_logging": True,
        "cache": False,
        "disable_end_user_cost_tracking": True,
    }
    return {
        "model_list": model_list,
        "router_settings": router_settings,
        "litellm_settings": litellm_settings,
        "general_settings": {
            "custom_auth": custom_auth,
            # Model access, limits and budgets are the custom auth's own (gateway_policy.py); LiteLLM's
            # post-auth checks (`enable_post_custom_auth_checks`) would repeat them per request.
            "enable_post_custom_auth_checks": False,
            # No database of LiteLLM's own: its spend and error logs have nowhere to go.
            "disable_spend_logs": True,
            "disable_error_logs": True,
        },
    }


def render_json(config: dict[str, Any]) -> str:
    """Stable text of a rendered config (LiteLLM reads YAML, a superset of JSON)."""
    return json.dumps(config, indent=2, sort_keys=True)
