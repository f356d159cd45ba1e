"""The gateway's usage table: its definition, the row the gateway writes, and the per consumer and
model summary `llmfleet usage` reads back. Pure: the SQL text and its parameters."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from llmfleet.model_store.errors import EXIT_BAD_INPUT, LlmfleetError
from llmfleet.model_store.gateway.policy import UsageRow

USAGE_TABLE_DDL = """
CREATE TABLE IF NOT EXISTS llmfleet_usage (
    id BIGSERIAL PRIMARY KEY,
    at TIMESTAMPTZ NOT NULL,
    consumer TEXT NOT NULL,
    model TEXT NOT NULL,
    route TEXT NOT NULL,
    adapter TEXT,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    latency_ms DOUBLE PRECISION NOT NULL,
    status INTEGER NOT NULL,
    cost_usd DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS llmfleet_usage_consumer_at ON llmfleet_usage (consumer, at);
CREATE INDEX IF NOT EXISTS llmfleet_usage_at ON llmfleet_usage (at);
"""
INSERT_USAGE = (
    "INSERT INTO llmfleet_usage (at, consumer, model, route, adapter, prompt_tokens, completion_tokens, "
    "latency_ms, status, cost_usd) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
MONTH_SPEND = "SELECT COALESCE(SUM(cost_usd), 0) FROM llmfleet_usage WHERE consumer = %s AND at >= %s"
SUMMARY = """
SELECT consumer, model, COUNT(*), COUNT(*) FILTER (WHERE status >= 400),
       COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(cost_usd), 0),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms)
FROM llmfleet_usage WHERE at >= %s AND (%s::text IS NULL OR consumer = %s)
GROUP BY consumer, model ORDER BY consumer, model
"""


class UsageQueryError(LlmfleetError):
    exit_code = EXIT_BAD_INPUT


def insert_params(row: UsageRow) -> tuple:
    return (row.at, row.consumer, row.model, row.route, row.adapter, row.prompt_tokens, row.completion_tokens,
            row.latency_ms, row.status, row.cost_usd)


_DURATION = re.compile(r"^(\d{1,6})([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str, now: datetime) -> datetime:
    """`--since`: a duration back from now (90m, 24h, 30d) or a UTC date or time (2026-12-01[T10:00])."""
    match = _DURATION.match(text)
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageQueryError(
            f"--since {text!r}: give a duration (90m, 24h, 30d) or a UTC date or time (2026-12-01, 2026-12-01T10:00)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class UsageSummary:
    consumer: str
    model: str
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_p50_ms: float

    @classmethod
    def from_row(cls, row: tuple) -> UsageSummary:
        consumer, model, requests, errors, prompt, completion, cost, p50 = row
        return cls(consumer, model, int(requests), int(errors), int(prompt), int(completion), float(cost), float(p50 or 0))


def summary_params(since: datetime, consumer: str | None) -> tuple:
    return (since, consumer, consumer)
