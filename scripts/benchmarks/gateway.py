"""The gateway's own cost: latency and time to first token added over calling the upstream directly,
CPU per request and per streamed token, and the requests per second one gateway process holds.

The upstream is an OpenAI stub that answers at once (scripts/openai_stub.py), so the difference is
the gateway's (custom auth with its Redis counters, routing, the usage logger's Redis and Postgres
writes). Everything runs on this machine's shared cores: the load generator and the stub compete
with the gateway, so the rate is a floor for a task with a core of its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from llmfleet.model_store.gateway.consumers import Consumer
from llmfleet.model_store.gateway.config import GatewayConfig, OpenAIUpstream, Price, Route
from llmfleet.model_store.gateway.contract import CPU_TARGET_PERCENT, REQUESTS_PER_SECOND_PER_TASK, upstream_key_env
from llmfleet.scripts.local_fleet import http_ok, start_detached, stop_process, wait_until
from llmfleet.scripts.local_gateway import free_port, running_gateway

SEQUENTIAL = 200  # requests per latency figure
STREAM_TOKENS = 32
CONCURRENCY = 16
LOAD_SECONDS = 15.0
MESSAGES = [{"role": "user", "content": "How long is the coast of Norway?"}]


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def _config(upstream: str) -> GatewayConfig:
    live = OpenAIUpstream(base_url=f"{upstream}/v1", api_key_env=upstream_key_env("bench"))
    return GatewayConfig(
        fleet="bench", stage="bench", upstreams={"bench": live}, routes=[Route(name="bench", model="bench", upstream_model="bench")],
        fallbacks={}, prices={"bench": Price(prompt_usd_per_million=0.1, completion_usd_per_million=0.4, source="bench")},
        # Every limit on, none reached: each request pays for the counters it would in production.
        consumers=[Consumer(name="bench", models=["*"], rpm=1_000_000, tpm=1_000_000_000, monthly_budget_usd=1_000_000)],
    )


def _latency(client: httpx.Client, base: str, headers: dict[str, str]) -> list[float]:
    body = {"model": "bench", "messages": MESSAGES, "max_tokens": 4}
    times = []
    for _ in range(SEQUENTIAL):
        started = time.perf_counter()
        client.post(f"{base}/v1/chat/completions", json=body, headers=headers).raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
    return times


def _ttft(client: httpx.Client, base: str, headers: dict[str, str]) -> list[float]:
    body = {"model": "bench", "messages": MESSAGES, "max_tokens": STREAM_TOKENS, "stream": True}
    times = []
    for _ in range(SEQUENTIAL):
        started = time.perf_counter()
        first = None
        with client.stream("POST", f"{base}/v1/chat/completions", json=body, headers=headers) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if first is None and line.startswith("data: {") and '"content"' in line:
                    first = (time.perf_counter() - started) * 1000
        times.append(first)
    return times


def _cpu_seconds(pid: int) -> float:
    process = psutil.Process(pid)
    return sum(p.cpu_times().user + p.cpu_times().system for p in [process, *process.children(recursive=True)])


async def _load(base: str, headers: dict[str, str]) -> tuple[int, float]:
    body = {"model": "bench", "messages": MESSAGES, "max_tokens": 4}
    done = 0
    deadline = time.perf_counter() + LOAD_SECONDS
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                (await client.post(f"{base}/v1/chat/completions", json=body, headers=headers)).raise_for_status()
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return done, time.perf_counter() - started


def _row(name: str, direct: list[float], through: list[float]) -> str:
    d50, g50 = statistics.median(direct), statistics.median(through)
    d99, g99 = _percentile(direct, 99), _percentile(through, 99)
    return (f"{name:<22} direct p50 {d50:7.2f} p99 {d99:7.2f} | gateway p50 {g50:7.2f} p99 {g99:7.2f} | "
            f"added p50 {g50 - d50:+7.2f} p99 {g99 - d99:+7.2f} ms")


def run() -> None:
    from moto.server import ThreadedMotoServer

    work = Path(tempfile.mkdtemp(prefix="llmfleet-bench-gateway-"))
    moto_port, stub_port = free_port(), free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
    moto.start()
    stub = start_detached("stub", [sys.executable, "-m", "llmfleet.scripts.openai_stub", "--port", str(stub_port),
                                   "--tokens", str(STREAM_TOKENS)], dict(os.environ), work / "stub.log", stub_port)
    upstream = f"http://127.0.0.1:{stub_port}"
    try:
        wait_until(lambda: http_ok(f"{upstream}/v1/models"), process=stub, timeout=30, what="the stub serves")
        started = time.perf_counter()
        with running_gateway(_config(upstream), work, f"http://127.0.0.1:{moto_port}", "us-east-1",
                             {upstream_key_env("bench"): "bench"}) as gateway:
            print(f"gateway ready in {time.perf_counter() - started:.1f} s (LiteLLM proxy start)")
            key = gateway.keys.create("bench")
            through, direct = {"Authorization": f"Bearer {key}"}, {}
            pid = gateway.processes[-1].pid
            with httpx.Client(timeout=60) as client:
                _latency(client, gateway.url, through)  # warm: keys read, connections open
                _latency(client, upstream, direct)
                cpu = _cpu_seconds(pid)
                gateway_latency = _latency(client, gateway.url, through)
                cpu_request = (_cpu_seconds(pid) - cpu) / SEQUENTIAL * 1000
                direct_latency = _latency(client, upstream, direct)
                print(_row("request (4 tokens)", direct_latency, gateway_latency))
                cpu = _cpu_seconds(pid)
                gateway_ttft = _ttft(client, gateway.url, through)
                cpu_stream = (_cpu_seconds(pid) - cpu) / SEQUENTIAL * 1000
                direct_ttft = _ttft(client, upstream, direct)
                print(_row("time to first token", direct_ttft, gateway_ttft))
            per_token = (cpu_stream - cpu_request) / (STREAM_TOKENS - 4)
            print(f"gateway CPU: {cpu_request:.1f} ms per request; {per_token:.2f} ms per streamed token "
                  f"({cpu_stream:.1f} ms per {STREAM_TOKENS}-token stream)")
            cpu = _cpu_seconds(pid)
            done, seconds = asyncio.run(_load(gateway.url, through))
            busy = (_cpu_seconds(pid) - cpu) / seconds * 100
            rate = done / seconds
            print(f"load: {CONCURRENCY} clients for {seconds:.0f} s: {rate:.1f} requests/s through one gateway process "
                  f"at {busy:.0f}% of a core (stub and load generator on the same {psutil.cpu_count()} cores)")
            at_target = rate * CPU_TARGET_PERCENT / max(busy, CPU_TARGET_PERCENT)
            print(f"sizing: ~{at_target:.0f} requests/s per 1-vCPU task at {CPU_TARGET_PERCENT}% CPU "
                  f"(model_store/gateway/contract.py REQUESTS_PER_SECOND_PER_TASK = {REQUESTS_PER_SECOND_PER_TASK:g})")
            added = statistics.median(gateway_ttft) - statistics.median(direct_ttft)
            print(f"goal: added TTFT p50 <= 15 ms: {added:.1f} ms ({'met' if added <= 15 else 'not met'})")
            print(json.dumps({"added_ttft_p50_ms": round(added, 2), "requests_per_second": round(rate, 1)}))
    finally:
        stop_process(stub)
        moto.stop()
        shutil.rmtree(work, ignore_errors=True)
