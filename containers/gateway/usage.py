"""LiteLLM callback: one usage row per request (Postgres), the consumer's counters (Redis) and
an embedded-metric-format line (stdout, CloudWatch Logs turns it into metrics).

Named in LiteLLM's config as `litellm_settings.callbacks`; LiteLLM calls it after each request,
success or failure, with its standard logging payload.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from litellm.integrations.custom_logger import CustomLogger

from llmfleet.containers.gateway.auth import MINUTE_TTL_SECONDS, MONTH_TTL_SECONDS
from llmfleet.containers.gateway.runtime import runtime
from llmfleet.model_store.gateway.consumers import ADAPTER_SEPARATOR
from llmfleet.model_store.gateway.policy import cost_usd, counter_keys, emf_line, UsageRow, windows

log = logging.getLogger("llmfleet.gateway")


def _status(kwargs: dict, failed: bool) -> int:
    if not failed:
        return 200
    exception = kwargs.get("exception")
    code = getattr(exception, "status_code", None) or getattr(exception, "code", None)
    try:
        return int(code)
    except (TypeError, ValueError):
        return 500


def usage_row(kwargs: dict, start_time: datetime, end_time: datetime, *, failed: bool) -> UsageRow | None:
    """The row for one request from LiteLLM's standard logging payload; None for a caller without a consumer."""
    payload = kwargs.get("standard_logging_object") or {}
    metadata = payload.get("metadata") or {}
    consumer = metadata.get("user_api_key_user_id")
    if not consumer:
        return None
    config = runtime().config
    requested = str(payload.get("model_group") or kwargs.get("model") or "")
    route = config.route(requested)
    adapter = route.adapter if route is not None else None
    if adapter == "*":
        # The wildcard's group is its pattern; the upstream was called with the adapter's own name.
        adapter = str(payload.get("model") or "").rpartition("/")[2]
        requested = f"{route.model}{ADAPTER_SEPARATOR}{adapter}"
    prompt = int(payload.get("prompt_tokens") or 0)
    completion = int(payload.get("completion_tokens") or 0)
    model = route.model if route is not None else requested
    return UsageRow(
        at=end_time.astimezone(UTC) if end_time.tzinfo else end_time.replace(tzinfo=UTC),
        consumer=consumer,
        model=model,
        route=requested,
        adapter=adapter,
        prompt_tokens=prompt,
        completion_tokens=completion,
        latency_ms=(end_time - start_time).total_seconds() * 1000,
        status=_status(kwargs, failed),
        cost_usd=cost_usd(config.prices.get(model), prompt, completion),
    )


class UsageLogger(CustomLogger):
    async def _record(self, kwargs, start_time, end_time, *, failed: bool) -> None:
        row = usage_row(kwargs, start_time, end_time, failed=failed)
        if row is None:
            return
        gateway = runtime()
        print(emf_line(row, gateway.config.fleet, gateway.config.stage), flush=True)
        try:
            if gateway.redis is not None and (row.prompt_tokens or row.completion_tokens):
                keys = counter_keys(gateway.config.fleet, gateway.config.stage, row.consumer, windows(row.at))
                async with gateway.redis.pipeline(transaction=False) as pipe:
                    pipe.incrby(keys["tokens"], row.prompt_tokens + row.completion_tokens)
                    pipe.expire(keys["tokens"], MINUTE_TTL_SECONDS)
                    pipe.incrbyfloat(keys["spend"], row.cost_usd).expire(keys["spend"], MONTH_TTL_SECONDS)
                    await pipe.execute()
            await gateway.insert_usage(row)
        except Exception:  # noqa: BLE001 - a lost row is logged; the client's answer is already sent
            log.exception("usage of %s on %s not recorded", row.consumer, row.route)

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        await self._record(kwargs, start_time, end_time, failed=False)

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):
        await self._record(kwargs, start_time, end_time, failed=True)


usage_logger = UsageLogger()
