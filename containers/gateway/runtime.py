"""The gateway's shared state inside the proxy process: its config, the key hashes (re-read from
Secrets Manager every KEYS_REFRESH_SECONDS), and its Redis and Postgres connections.

Made once, on first use, from the environment (the container's edge); both plug-ins use it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime

import boto3
import psycopg
import redis.asyncio as aioredis

from llmfleet.model_store.gateway.config import GatewayConfig
from llmfleet.model_store.gateway.contract import (
    CONFIG_ENV,
    DB_HOST_ENV,
    DB_NAME_ENV,
    DB_PASSWORD_ENV,
    DB_PORT_ENV,
    DB_USER_ENV,
    DEFAULT_DB_NAME,
    KEYS_REFRESH_SECONDS,
    KEYS_SECRET_ENV,
    POSTGRES_PORT,
    REDIS_URL_ENV,
)
from llmfleet.model_store.gateway.policy import consumers_by_hash, parse_keys_secret, UsageRow
from llmfleet.model_store.gateway.usage import insert_params, INSERT_USAGE, MONTH_SPEND, USAGE_TABLE_DDL

log = logging.getLogger("llmfleet.gateway")

def database_dsn(env: dict[str, str]) -> str | None:
    """libpq connection string from the task's DB variables; None when the task has none."""
    if DB_HOST_ENV not in env:
        return None
    return psycopg.conninfo.make_conninfo(
        host=env[DB_HOST_ENV],
        port=env.get(DB_PORT_ENV, str(POSTGRES_PORT)),
        user=env.get(DB_USER_ENV, "postgres"),
        password=env.get(DB_PASSWORD_ENV, ""),
        dbname=env.get(DB_NAME_ENV, DEFAULT_DB_NAME),
        # Aurora accepts TLS; a local Postgres on loopback may not offer it.
        sslmode="prefer",
        connect_timeout="5",
    )


@dataclass
class Keys:
    """Consumer by key hash, re-read from the secret when older than KEYS_REFRESH_SECONDS."""

    secret_id: str
    by_hash: dict[str, str] = field(default_factory=dict)
    read_at: float = float("-inf")
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def _read(self) -> dict[str, str]:
        client = boto3.client("secretsmanager")
        return consumers_by_hash(parse_keys_secret(client.get_secret_value(SecretId=self.secret_id)["SecretString"]))

    async def consumer_of(self, digest: str) -> str | None:
        if time.monotonic() - self.read_at >= KEYS_REFRESH_SECONDS and not self.lock.locked():
            async with self.lock:
                try:
                    self.by_hash = await asyncio.to_thread(self._read)
                except Exception as exc:  # noqa: BLE001 - keep serving the keys read last; say why once a minute
                    if not self.by_hash:
                        raise
                    log.error("keys secret %s not re-read, keeping the last one: %s", self.secret_id, exc)
                self.read_at = time.monotonic()
        return self.by_hash.get(digest)


class Runtime:
    """One per proxy process."""

    def __init__(self, env: dict[str, str]):
        self.config = GatewayConfig.from_json(env[CONFIG_ENV])
        self.consumers = {c.name: c for c in self.config.consumers}
        self.keys = Keys(env[KEYS_SECRET_ENV])
        redis_url = env.get(REDIS_URL_ENV)
        self.redis = aioredis.from_url(redis_url) if redis_url else None
        self.dsn = database_dsn(env)
        self._db: psycopg.AsyncConnection | None = None
        self._db_lock = asyncio.Lock()

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._db is None or self._db.closed:
            self._db = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
            await self._db.execute(USAGE_TABLE_DDL)
        return self._db

    async def execute(self, query: str, params: tuple) -> list[tuple]:
        """One statement on the usage database (one connection per process, reconnected when lost)."""
        async with self._db_lock:
            try:
                cursor = await (await self._connection()).execute(query, params)
            except psycopg.OperationalError:
                self._db = None
                cursor = await (await self._connection()).execute(query, params)
            return await cursor.fetchall() if cursor.description else []

    async def insert_usage(self, row: UsageRow) -> None:
        if self.dsn is None:
            return
        await self.execute(INSERT_USAGE, insert_params(row))

    async def month_spend(self, consumer: str, month_start: datetime) -> float:
        if self.dsn is None:
            return 0.0
        [(total,)] = await self.execute(MONTH_SPEND, (consumer, month_start))
        return float(total)


_runtime: Runtime | None = None


def runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        _runtime = Runtime(dict(os.environ))
    return _runtime
