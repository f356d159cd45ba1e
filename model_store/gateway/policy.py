"""What the gateway decides per request, as pure functions: whose key it is, whether the consumer
may call the model, which limit a request would pass, what it costs, and the metric line it leaves.

The container (containers/gateway/) only fetches the counters (Redis), the key hashes (Secrets
Manager) and writes the rows (Postgres); every decision is here, where unit tests reach it.

What a client sees (the OpenAI SDK's exception in brackets):
- no key or an unknown one: 401 `authentication_error` [AuthenticationError];
- a model its consumer was not given: 403 `permission_error` [PermissionDeniedError];
- over its requests or tokens per minute: 429 `rate_limit_error`, `param` naming the limit
  (`rpm` or `tpm`), with Retry-After until the next minute [RateLimitError];
- its monthly budget spent: 429 `insufficient_quota` (OpenAI's type for an exhausted quota),
  `param` `monthly_budget_usd`, Retry-After until the next month (UTC) [RateLimitError].
The error body is OpenAI's: {"error": {"message", "type", "param", "code": "<status>"}}.
Windows are fixed: each UTC minute, each UTC calendar month. A token limit is checked before a
request with the tokens counted so far (a request's own tokens are known only after it), so a
minute may overshoot by the requests in flight when it filled; budgets likewise.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from llmfleet.model_store.gateway.consumers import Consumer, CONSUMER_NAME
from llmfleet.model_store.gateway.config import GatewayConfig, Price
from llmfleet.model_store.gateway.contract import METRIC_DIMENSIONS, METRICS_NAMESPACE
from llmfleet.model_store.errors import EXIT_BAD_INPUT, LlmfleetError

KEY_PREFIX = "sk-llmfleet-"
KEY_BYTES = 32  # 256 random bits, url-safe base64


class KeysSecretError(LlmfleetError):
    """The keys secret is not {consumer: [sha256 hex, ...]}."""

    exit_code = EXIT_BAD_INPUT


def new_key() -> str:
    """A fresh client key; only its hash is ever stored."""
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


def key_hash(key: str) -> str:
    """sha256 hex of a key: what the keys secret holds (a 256-bit random key needs no slow hash)."""
    return hashlib.sha256(key.encode()).hexdigest()


_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def parse_keys_secret(text: str) -> dict[str, list[str]]:
    """The keys secret's {consumer: [hash, ...]}, validated (a bad one never half-applies)."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeysSecretError(f"keys secret: not JSON ({exc.msg} at {exc.pos})") from None
    if not isinstance(document, dict):
        raise KeysSecretError("keys secret: must be an object {consumer: [sha256 hex, ...]}")
    for consumer, hashes in document.items():
        if not isinstance(consumer, str) or not re.match(CONSUMER_NAME, consumer):
            raise KeysSecretError(f"keys secret: consumer {consumer!r} is not a consumer name")
        if not isinstance(hashes, list) or not all(isinstance(h, str) and _SHA256_HEX.match(h) for h in hashes):
            raise KeysSecretError(f"keys secret: consumer {consumer!r} must map to a list of sha256 hex digests")
    return document


def consumers_by_hash(secret: dict[str, list[str]]) -> dict[str, str]:
    """hash -> consumer, for the lookup of every request."""
    return {digest: consumer for consumer, hashes in secret.items() for digest in hashes}


@dataclass(frozen=True)
class Refusal:
    """An OpenAI-shaped error the gateway answers instead of forwarding."""

    status: int
    type: str
    param: str | None
    message: str
    retry_after: int | None = None

    def headers(self) -> dict[str, str]:
        return {"retry-after": str(self.retry_after)} if self.retry_after is not None else {}


def unknown_key() -> Refusal:
    return Refusal(401, "authentication_error", None, "unknown or missing API key (Authorization: Bearer <key>)")


def access_refusal(config: GatewayConfig, consumer: Consumer, model: str | None) -> Refusal | None:
    """403 unless the consumer's models open `model`; None when it may call it."""
    if model is None:
        return None  # /v1/models lists only what the consumer may call
    allowed = config.allowed_routes(consumer)
    route = config.route(model)
    if route is not None and (route.name in allowed or model in allowed):
        return None
    return Refusal(
        403,
        "permission_error",
        "model",
        f"consumer {consumer.name!r} may not call model {model!r}; allowed: {sorted(consumer.models)}",
    )


@dataclass(frozen=True)
class Windows:
    """The fixed windows a request falls in, and the seconds until each closes."""

    minute: str
    month: str
    month_start: datetime
    seconds_to_next_minute: int
    seconds_to_next_month: int


def windows(now: datetime) -> Windows:
    now = now.astimezone(UTC)
    next_month = datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=UTC)
    return Windows(
        minute=now.strftime("%Y%m%d%H%M"),
        month=now.strftime("%Y-%m"),
        month_start=datetime(now.year, now.month, 1, tzinfo=UTC),
        seconds_to_next_minute=60 - now.second,
        seconds_to_next_month=max(1, int((next_month - now).total_seconds())),
    )


def counter_keys(fleet: str, stage: str, consumer: str, window: Windows) -> dict[str, str]:
    """Redis keys of a consumer's counters in these windows (shared by every gateway task)."""
    base = f"llmfleet:{fleet}:{stage}:{consumer}"
    return {
        "requests": f"{base}:requests:{window.minute}",
        "tokens": f"{base}:tokens:{window.minute}",
        "spend": f"{base}:spend:{window.month}",
    }


def limit_refusal(
    consumer: Consumer, *, requests_this_minute: int, tokens_this_minute: int, spend_this_month: float, window: Windows
) -> Refusal | None:
    """Which limit (if any) refuses a request; `requests_this_minute` counts this one."""
    if consumer.monthly_budget_usd is not None and spend_this_month >= consumer.monthly_budget_usd:
        return Refusal(
            429,
            "insufficient_quota",
            "monthly_budget_usd",
            f"consumer {consumer.name!r} has spent ${spend_this_month:.4f} of its ${consumer.monthly_budget_usd:g} "
            f"monthly budget ({window.month}, UTC)",
            window.seconds_to_next_month,
        )
    if consumer.rpm is not None and requests_this_minute > consumer.rpm:
        return Refusal(
            429, "rate_limit_error", "rpm",
            f"consumer {consumer.name!r} is limited to {consumer.rpm} requests per minute",
            window.seconds_to_next_minute,
        )
    if consumer.tpm is not None and tokens_this_minute >= consumer.tpm:
        return Refusal(
            429, "rate_limit_error", "tpm",
            f"consumer {consumer.name!r} is limited to {consumer.tpm} tokens per minute ({tokens_this_minute} used)",
            window.seconds_to_next_minute,
        )
    return None


def cost_usd(price: Price | None, prompt_tokens: int, completion_tokens: int) -> float:
    """What a request costs its consumer's budget (0 for a model without a price: no budget may call it)."""
    if price is None:
        return 0.0
    return (prompt_tokens * price.prompt_usd_per_million + completion_tokens * price.completion_usd_per_million) / 1e6


@dataclass(frozen=True)
class UsageRow:
    """One request, as `llmfleet usage` reads it back."""

    at: datetime
    consumer: str
    model: str
    route: str
    adapter: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    status: int
    cost_usd: float


def emf_line(row: UsageRow, fleet: str, stage: str) -> str:
    """A CloudWatch embedded-metric-format line for one request (dimensions METRIC_DIMENSIONS)."""
    metrics = {
        "Requests": (1, "Count"),
        "PromptTokens": (row.prompt_tokens, "Count"),
        "CompletionTokens": (row.completion_tokens, "Count"),
        "Errors": (int(row.status >= 400), "Count"),
        "LatencyMs": (round(row.latency_ms, 3), "Milliseconds"),
    }
    document = {
        "_aws": {
            "Timestamp": int(row.at.timestamp() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": METRICS_NAMESPACE,
                    "Dimensions": [list(METRIC_DIMENSIONS)],
                    "Metrics": [{"Name": name, "Unit": unit} for name, (_, unit) in metrics.items()],
                }
            ],
        },
        **dict(zip(METRIC_DIMENSIONS, (fleet, stage, row.consumer, row.model), strict=True)),
        **{name: value for name, (value, _) in metrics.items()},
    }
    return json.dumps(document, separators=(",", ":"))
