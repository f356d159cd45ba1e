"""LiteLLM custom auth: the key's consumer, the model's access, the consumer's limits and budget.

Named in LiteLLM's config as `general_settings.custom_auth`; every request to a client path
passes here before LiteLLM routes it. A refusal is raised as LiteLLM's ProxyException, which
the proxy answers with that status, OpenAI-shaped (model_store/gateway/policy.py says what).
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import Request
from litellm.proxy._types import ProxyException, UserAPIKeyAuth
from litellm.proxy.common_utils.http_parsing_utils import read_request_body

from llmfleet.containers.gateway.runtime import runtime
from llmfleet.model_store.gateway.contract import GATEWAY_CLIENT_PATHS
from llmfleet.model_store.gateway.policy import (
    access_refusal,
    counter_keys,
    key_hash,
    limit_refusal,
    Refusal,
    unknown_key,
    windows,
)

# A minute's counters outlive it by one (late writes of slow requests); a month's spend by
# ten days, so `llmfleet usage` and a restarted task see the month just ended.
MINUTE_TTL_SECONDS = 120
MONTH_TTL_SECONDS = 41 * 86400
# LiteLLM serves its client routes with and without the /v1 prefix.
CLIENT_PATHS = frozenset(GATEWAY_CLIENT_PATHS) | {path.removeprefix("/v1") for path in GATEWAY_CLIENT_PATHS}


def _raise(refusal: Refusal) -> None:
    raise ProxyException(
        message=refusal.message,
        type=refusal.type,
        param=refusal.param,
        code=refusal.status,
        headers=refusal.headers(),
    )


async def user_api_key_auth(request: Request, api_key: str) -> UserAPIKeyAuth:
    gateway = runtime()
    consumer_name = await gateway.keys.consumer_of(key_hash(api_key.removeprefix("Bearer ").strip())) if api_key else None
    consumer = gateway.consumers.get(consumer_name) if consumer_name else None
    if consumer is None:
        _raise(unknown_key())
    if request.url.path not in CLIENT_PATHS:
        _raise(Refusal(403, "permission_error", None, f"{request.url.path} is not a client path"))
    model = None
    if request.method == "POST":
        model = (await read_request_body(request)).get("model")
    refusal = access_refusal(gateway.config, consumer, model if isinstance(model, str) else None)
    if refusal is not None:
        _raise(refusal)
    if model is not None and (consumer.rpm or consumer.tpm or consumer.monthly_budget_usd):
        refusal = await _limits(consumer, datetime.now(UTC))
        if refusal is not None:
            _raise(refusal)
    return UserAPIKeyAuth(
        api_key=key_hash(api_key),
        user_id=consumer.name,
        key_alias=consumer.name,
        models=gateway.config.allowed_routes(consumer),
    )


async def _limits(consumer, now: datetime) -> Refusal | None:
    """Count this request and read the minute's tokens and the month's spend, in one round trip."""
    gateway = runtime()
    window = windows(now)
    keys = counter_keys(gateway.config.fleet, gateway.config.stage, consumer.name, window)
    async with gateway.redis.pipeline(transaction=False) as pipe:
        pipe.incr(keys["requests"]).expire(keys["requests"], MINUTE_TTL_SECONDS)
        pipe.get(keys["tokens"]).get(keys["spend"])
        requests, _, tokens, spend = await pipe.execute()
    if spend is None and consumer.monthly_budget_usd is not None:
        # Redis lost the month (a restart, an eviction): start again from the usage rows.
        spend = await gateway.month_spend(consumer.name, window.month_start)
        await gateway.redis.set(keys["spend"], spend, ex=MONTH_TTL_SECONDS, nx=True)
    return limit_refusal(
        consumer,
        requests_this_minute=int(requests),
        tokens_this_minute=int(tokens or 0),
        spend_this_month=float(spend or 0),
        window=window,
    )
