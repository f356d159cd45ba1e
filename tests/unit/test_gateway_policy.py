"""The gateway's per-request decisions: keys, access, limits, cost and the metric line."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from llmfleet.model_store.gateway.consumers import Consumer
from llmfleet.model_store.gateway.config import GatewayConfig, OpenAIUpstream, Price, Route
from llmfleet.model_store.gateway.policy import (
    access_refusal,
    consumers_by_hash,
    cost_usd,
    counter_keys,
    emf_line,
    key_hash,
    KEY_PREFIX,
    KeysSecretError,
    limit_refusal,
    new_key,
    parse_keys_secret,
    UsageRow,
    windows,
)

UPSTREAM = OpenAIUpstream(base_url="http://m/v1", api_key_env="K")
CONFIG = GatewayConfig(
    fleet="demo",
    stage="prod",
    upstreams={"m": UPSTREAM, "n": UPSTREAM},
    routes=[
        Route(name="m", model="m", upstream_model="m"),
        Route(name="m:x", model="m", upstream_model="x", adapter="x"),
        Route(name="m:*", model="m", upstream_model="*", adapter="*"),
        Route(name="n", model="n", upstream_model="n"),
    ],
    fallbacks={},
    prices={},
    consumers=[],
)
NOW = datetime(2026, 12, 31, 23, 59, 30, tzinfo=UTC)


def test_keys_are_random_and_only_their_hash_is_kept() -> None:
    first, second = new_key(), new_key()
    assert first.startswith(KEY_PREFIX) and first != second and len(first) > 40
    assert key_hash(first) != key_hash(second) and len(key_hash(first)) == 64
    assert first not in key_hash(first)


def test_keys_secret_is_validated_whole() -> None:
    digest = key_hash("k")
    assert consumers_by_hash(parse_keys_secret(json.dumps({"a": [digest], "b": []}))) == {digest: "a"}
    for bad, message in [
        ("[1]", "must be an object"),
        ("{", "not JSON"),
        (json.dumps({"A B": []}), "'A B' is not a consumer name"),
        (json.dumps({"a": ["sk-llmfleet-clear"]}), "list of sha256 hex"),
    ]:
        with pytest.raises(KeysSecretError, match=message):
            parse_keys_secret(bad)


@pytest.mark.parametrize(
    ("models", "model", "allowed"),
    [
        (["*"], "n", True),
        (["m"], "m", True),
        (["m"], "m:x", False),
        (["m:*"], "m:x", True),
        (["m:*"], "m:promoted-later", True),
        (["m:x"], "m:y", False),
        (["m:y"], "m:y", True),  # an adapter named before its promotion, reached through m:*
        (["m"], "n", False),
        (["m"], "unknown", False),
    ],
)
def test_access(models: list[str], model: str, allowed: bool) -> None:
    refusal = access_refusal(CONFIG, Consumer(name="c", models=models), model)
    assert (refusal is None) == allowed
    if refusal is not None:
        assert (refusal.status, refusal.type, refusal.param) == (403, "permission_error", "model")
        assert f"consumer 'c' may not call model {model!r}" in refusal.message


def test_windows_roll_over_at_minute_and_month() -> None:
    window = windows(NOW)
    assert (window.minute, window.month, window.seconds_to_next_minute, window.seconds_to_next_month) == (
        "202612312359", "2026-12", 30, 30,
    )
    assert window.month_start == datetime(2026, 12, 1, tzinfo=UTC)
    keys = counter_keys("demo", "prod", "c", window)
    assert keys["requests"] == "llmfleet:demo:prod:c:requests:202612312359"
    assert keys["spend"].endswith(":spend:2026-12")


def limits(consumer: Consumer, requests: int = 1, tokens: int = 0, spend: float = 0.0):
    return limit_refusal(consumer, requests_this_minute=requests, tokens_this_minute=tokens, spend_this_month=spend, window=windows(NOW))


def test_limits_in_order_budget_rpm_tpm() -> None:
    consumer = Consumer(name="c", models=["*"], rpm=2, tpm=100, monthly_budget_usd=1.0)
    assert limits(consumer, requests=2, tokens=99, spend=0.99) is None
    rpm = limits(consumer, requests=3)
    assert (rpm.status, rpm.type, rpm.param, rpm.retry_after) == (429, "rate_limit_error", "rpm", 30)
    tpm = limits(consumer, tokens=100)
    assert (tpm.param, tpm.headers()) == ("tpm", {"retry-after": "30"})
    budget = limits(consumer, requests=3, tokens=100, spend=1.0)
    assert (budget.status, budget.type, budget.param) == (429, "insufficient_quota", "monthly_budget_usd")
    assert "spent $1.0000 of its $1 monthly budget (2026-12, UTC)" in budget.message
    assert limits(Consumer(name="free", models=["*"]), requests=10**6, tokens=10**9, spend=10**6) is None


def test_cost_from_the_price() -> None:
    price = Price(prompt_usd_per_million=1.0, completion_usd_per_million=4.0, source="t")
    assert cost_usd(price, 1_000_000, 500_000) == pytest.approx(3.0)
    assert cost_usd(None, 10, 10) == 0.0


def test_emf_line_names_namespace_dimensions_and_metrics() -> None:
    row = UsageRow(NOW, "c", "m", "m:x", "x", 10, 5, 12.5, 429, 0.0)
    document = json.loads(emf_line(row, "demo", "prod"))
    [directive] = document["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "LLMFleet/Gateway"
    assert directive["Dimensions"] == [["Fleet", "Stage", "Consumer", "Model"]]
    assert (document["Fleet"], document["Stage"]) == ("demo", "prod")
    assert {m["Name"] for m in directive["Metrics"]} == {"Requests", "PromptTokens", "CompletionTokens", "Errors", "LatencyMs"}
    assert (document["Consumer"], document["Model"], document["Errors"], document["PromptTokens"]) == ("c", "m", 1, 10)
    assert document["_aws"]["Timestamp"] == int(NOW.timestamp() * 1000)
