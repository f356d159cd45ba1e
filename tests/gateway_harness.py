"""The gateway as the integration and e2e tests run it: a real Redis and Postgres, the keys secret
on moto's server, and the gateway's own entrypoint (LiteLLM's proxy in .venv-gateway) in front of
whatever upstreams a test gives, all on 127.0.0.1 (scripts/local_gateway.py starts them)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import openai
import psycopg

from llmfleet.model_store.gateway.config import GatewayConfig
from llmfleet.model_store.gateway.keys import GatewayKeys
from llmfleet.scripts import local_gateway
from llmfleet.scripts.local_fleet import ProcessRecord

REGION = "us-east-1"


@dataclass
class Gateway:
    config: GatewayConfig
    url: str
    database_url: str
    keys: GatewayKeys
    processes: list[ProcessRecord] = field(default_factory=list)
    issued: dict[str, str] = field(default_factory=dict)  # consumer -> key

    def client(self, key: str, **options) -> openai.OpenAI:
        """The OpenAI SDK as an application uses it, without retries: each answer is the gateway's."""
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, **options)

    def rows(self, consumer: str) -> list[dict]:
        with psycopg.connect(self.database_url) as connection:
            cursor = connection.execute(
                "SELECT model, route, adapter, prompt_tokens, completion_tokens, status, cost_usd, latency_ms "
                "FROM llmfleet_usage WHERE consumer = %s ORDER BY id", (consumer,)
            )
            names = [column.name for column in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def wait_rows(self, consumer: str, count: int, timeout: float = 30) -> list[dict]:
        """The consumer's rows once there are `count` (the logger writes after the answer is sent)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                rows = self.rows(consumer)
            except psycopg.errors.UndefinedTable:
                rows = []
            if len(rows) >= count or time.monotonic() > deadline:
                return rows
            time.sleep(0.1)

    def log(self) -> str:
        return Path(self.processes[-1].log).read_text(errors="replace")


@contextmanager
def running_gateway(
    config: GatewayConfig, work: Path, moto_endpoint: str, upstream_keys: dict[str, str]
) -> Iterator[Gateway]:
    """The gateway for `config` with a key issued to each of its consumers before the first request."""
    with local_gateway.running_gateway(config, work, moto_endpoint, REGION, upstream_keys) as running:
        gateway = Gateway(config, running.url, running.database_url, running.keys, running.processes)
        gateway.issued = {c.name: running.keys.create(c.name) for c in config.consumers}
        yield gateway


def error_body(error: openai.APIStatusError) -> dict:
    """The OpenAI-shaped error the gateway answered."""
    body = error.body if isinstance(error.body, dict) else json.loads(error.response.text)
    return body.get("error", body)
