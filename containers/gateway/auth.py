"""LiteLLM custom auth: the key's consumer, the model's access, the consumer's limits and budget.

Named in LiteLLM's config as `general_settings.custom_auth`; every request to a client path
passes here before LiteLLM routes it. A refusal is raised as LiteLLM's ProxyException, which
the proxy answers with that status, OpenAI-shaped (model_store/gateway/policy.py says what).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from fastapi import Request
from litellm.proxy._types import ProxyException, UserAPIKeyAuth
from litellm.proxy.common_utils.http_parsing_utils import read_request_body

from llmfleet.containers.gateway.runtime import runtime
from llmfleet.model_store.gateway.contract import GATEWAY_CLIENT_PATHS, GATEWAY_HEALTH_PATH, GATEWAY_MAX_BODY_BYTES
from llmfleet.model_store.gateway.policy import (
    Refusal,
    access_refusal,
    counter_keys,
    key_hash,
    limit_refusal,
    Refusal,
    unknown_key,
    windows,
)
from llmfleet.model_store.contract.request_limits import RequestRefused, declared_length

# A minute's counters outlive it by one (late writes of slow requests); a month's spend by
# ten days, so `llmfleet usage` and a restarted task see the month just ended.
MINUTE_TTL_SECONDS = 120
MONTH_TTL_SECONDS = 41 * 86400
# LiteLLM serves its client routes with and without the /v1 prefix.
CLIENT_PATHS = frozenset(GATEWAY_CLIENT_PATHS) | {path.removeprefix("/v1") for path in GATEWAY_CLIENT_PATHS}
# RFC 6455 7.4.1: a policy refusal; before accept, servers answer it as 403.
WEBSOCKET_POLICY_VIOLATION = 1008


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


def presented_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The key of `Authorization: Bearer <key>` or `x-api-key: <key>`, as LiteLLM takes it."""
    for name, value in headers:
        name = name.lower()
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key" and value.strip():
            return value.decode("latin-1").strip()
    return None


async def _send_refusal(send, refusal: Refusal) -> None:
    body = json.dumps({"error": {"message": refusal.message, "type": refusal.type, "param": refusal.param,
                                 "code": str(refusal.status)}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               *((k.encode(), v.encode()) for k, v in refusal.headers().items())]
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class FrontDoor:
    """Pure ASGI, outermost around LiteLLM's app: the key (against the same key hashes the custom
    auth reads), the path and the declared body size are checked from the request line and headers,
    before LiteLLM reads a byte of the body; a body that grows past GATEWAY_MAX_BODY_BYTES while
    streaming is cut off with 413. LiteLLM parses the body before its custom auth runs."""

    def __init__(self, app, max_body_bytes: int = GATEWAY_MAX_BODY_BYTES):
        self.app, self.max_body_bytes = app, max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "websocket":
            # No client path is a WebSocket (LiteLLM's realtime routes stay shut): closed before accept.
            await send({"type": "websocket.close", "code": WEBSOCKET_POLICY_VIOLATION})
            return
        if scope["type"] != "http" or scope["path"] == GATEWAY_HEALTH_PATH:
            await self.app(scope, receive, send)  # lifespan; the load balancer's keyless health check
            return
        key = presented_key(scope.get("headers", []))
        if key is None or await runtime().keys.consumer_of(key_hash(key)) is None:
            await _send_refusal(send, unknown_key())
            return
        if scope["path"] not in CLIENT_PATHS:
            await _send_refusal(send, Refusal(403, "permission_error", None, f"{scope['path']} is not a client path"))
            return
        headers = dict((k.lower(), v.decode("latin-1")) for k, v in scope.get("headers", []))
        try:
            declared_length(headers.get(b"content-length"), self.max_body_bytes)
        except RequestRefused as refused:
            await _send_refusal(send, Refusal(refused.status, "invalid_request_error", refused.field, str(refused)))
            return
        await self._capped(scope, receive, send)

    async def _capped(self, scope, receive, send) -> None:
        """The app with a `receive` that answers 413 and ends the request once the body passes the
        limit (whatever the app sends after that is dropped: the client has its answer)."""
        received, refused = 0, False

        async def capped_receive():
            nonlocal received, refused
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body_bytes and not refused:
                refused = True
                await _send_refusal(send, Refusal(
                    413, "invalid_request_error", None,
                    f"request body exceeds the gateway's limit of {self.max_body_bytes} bytes"))
            return {"type": "http.disconnect"} if refused else message

        async def guarded_send(message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, capped_receive, guarded_send)
