"""The gateway container's plug-ins in the real LiteLLM proxy, with a real Redis and Postgres and the
keys secret on moto's server, in front of an OpenAI stub upstream (the e2e tests put the real vLLM
there): keys, model access, rpm/tpm limits, a budget, usage rows, pass-through and fallback, as the
OpenAI SDK sees them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import openai
import pytest

from llmfleet.model_store.gateway.consumers import Consumer
from llmfleet.model_store.gateway.config import GatewayConfig, OpenAIUpstream, Price, Route
from llmfleet.model_store.gateway.contract import GATEWAY_MAX_BODY_BYTES
from llmfleet.model_store.gateway.policy import windows
from llmfleet.scripts import local_gateway
from llmfleet.scripts.local_fleet import http_ok, start_detached, stop_process, wait_until
from tests.conftest import free_port
from tests.gateway_harness import error_body, running_gateway

HELLO = [{"role": "user", "content": "hello there"}]
PRICE = Price(prompt_usd_per_million=1.0, completion_usd_per_million=2.0, source="test")


def config(stub: str, closed: str) -> GatewayConfig:
    live = OpenAIUpstream(base_url=f"{stub}/v1", api_key_env="LLMFLEET_UPSTREAM_KEY_M")
    down = OpenAIUpstream(base_url=f"{closed}/v1", api_key_env="LLMFLEET_UPSTREAM_KEY_DOWN")
    return GatewayConfig(
        fleet="it",
        stage="test",
        upstreams={"m": live, "n": live, "down": down},
        routes=[
            Route(name="m", model="m", upstream_model="m"),
            Route(name="m:x", model="m", upstream_model="x", adapter="x"),
            Route(name="m:*", model="m", upstream_model="*", adapter="*"),
            Route(name="n", model="n", upstream_model="n"),
            Route(name="down", model="down", upstream_model="down"),
        ],
        fallbacks={"down": ["m"]},
        prices={"m": PRICE, "n": PRICE},
        consumers=[
            Consumer(name="search", models=["m", "m:*"], rpm=3),
            Consumer(name="tokens", models=["n"], tpm=20),
            Consumer(name="budget", models=["m"], monthly_budget_usd=0.00003),
            Consumer(name="ops", models=["*"]),
        ],
    )


@pytest.fixture(scope="module")
def stub(tmp_path_factory) -> str:
    port = free_port()
    work = tmp_path_factory.mktemp("stub")
    record = start_detached("stub", [sys.executable, "-m", "llmfleet.scripts.openai_stub", "--port", str(port), "--tokens", "4"],
                            dict(os.environ), work / "stub.log", port)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ok(f"{url}/v1/models"), process=record, timeout=30, what="the stub serves")
    yield url
    stop_process(record)


@pytest.fixture(scope="module")
def gateway(stub: str, moto_endpoint: str, tmp_path_factory):
    closed = f"http://127.0.0.1:{free_port()}"
    # An empty HOME of its own: the last test checks that the proxy wrote nothing there (the task's
    # root filesystem is read-only, /tmp alone writable).
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
        started = time.time()
        keys = {"LLMFLEET_UPSTREAM_KEY_M": "upstream-secret", "LLMFLEET_UPSTREAM_KEY_DOWN": "x"}
        with running_gateway(config(stub, closed), tmp_path_factory.mktemp("gateway"), moto_endpoint, keys) as gateway:
            gateway.home, gateway.started = Path(os.environ["HOME"]), started
            yield gateway


def chat(gateway, consumer: str, model: str, **extra):
    return gateway.client(gateway.issued[consumer]).chat.completions.create(model=model, messages=HELLO, max_tokens=4, **extra)


def refusal(call) -> tuple[int, dict, httpx.Headers]:
    with pytest.raises(openai.APIStatusError) as caught:
        call()
    return caught.value.status_code, error_body(caught.value), caught.value.response.headers


def test_unknown_or_missing_key_is_401(gateway) -> None:
    for key in ("sk-llmfleet-not-issued", "upstream-secret"):
        status, body, _ = refusal(lambda: gateway.client(key).chat.completions.create(model="m", messages=HELLO))
        assert (status, body["type"]) == (401, "authentication_error")
    assert httpx.post(f"{gateway.url}/v1/chat/completions", json={"model": "m", "messages": HELLO}).status_code == 401


def raw_post(gateway, headers: dict[str, str], chunks=()) -> tuple[int, bytes, int]:
    """POST the headers, then send body `chunks` only while the gateway has not answered: the status,
    the answer's first bytes and how many body bytes were sent before it came (a socket, not a
    client library, so nothing is sent ahead of the answer)."""
    host, port = gateway.url.removeprefix("http://").split(":")
    lines = ["POST /v1/chat/completions HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers.items())]
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        sent = 0
        for chunk in chunks:
            sock.setblocking(False)
            try:
                answer = sock.recv(65536)
            except BlockingIOError:
                answer = b""
            sock.setblocking(True)
            if answer:
                break
            sock.sendall(chunk)
            sent += len(chunk)
        else:
            answer = sock.recv(65536)
        head, _, body = answer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = int(next(line.split(b":")[1] for line in lines if line.lower().startswith(b"content-length")))
        while len(body) < length and (more := sock.recv(65536)):
            body += more
    return int(answer.split(b" ", 2)[1]), head + b"\r\n\r\n" + body, sent


def test_bad_key_and_oversized_body_are_refused_before_the_body_is_read(gateway) -> None:
    # A body declared but never sent: the answer can only come before the body is read.
    declared = {"Content-Type": "application/json", "Content-Length": "1000000"}
    for auth in ({}, {"Authorization": "Bearer sk-llmfleet-not-issued"}, {"x-api-key": "upstream-secret"}):
        status, answer, _ = raw_post(gateway, {**declared, **auth})
        assert status == 401 and b"authentication_error" in answer, answer[:300]
    good = {"Authorization": f"Bearer {gateway.issued['ops']}"}
    status, answer, _ = raw_post(gateway, {**good, "Content-Length": str(GATEWAY_MAX_BODY_BYTES + 1)})
    assert status == 413 and str(GATEWAY_MAX_BODY_BYTES).encode() in answer, answer[:300]
    # Chunked, no length declared: cut off once the streamed bytes pass the limit, the rest unsent.
    chunk = b"%x\r\n%s\r\n" % (1 << 20, b" " * (1 << 20))
    chunks = [chunk] * (GATEWAY_MAX_BODY_BYTES // (1 << 20) + 40)
    status, answer, sent = raw_post(gateway, {**good, "Transfer-Encoding": "chunked"}, chunks)
    assert status == 413 and sent < len(chunks) * len(chunk), (answer[:300], sent)
    # The gateway still serves that key.
    assert chat(gateway, "ops", "m").choices[0].message.content


def test_websockets_are_refused_even_with_a_key(gateway) -> None:
    host, port = gateway.url.removeprefix("http://").split(":")
    upgrade = (f"GET /v1/realtime?model=m HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
               f"Authorization: Bearer {gateway.issued['ops']}\r\n\r\n")
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(upgrade.encode())
        assert sock.recv(65536).split(b" ", 2)[1] == b"403"


def test_model_not_given_is_403_and_models_lists_only_given_ones(gateway) -> None:
    status, body, _ = refusal(lambda: chat(gateway, "tokens", "m"))
    assert (status, body["type"], body["param"]) == (403, "permission_error", "model")
    assert "consumer 'tokens' may not call model 'm'; allowed: ['n']" in body["message"]
    assert [m.id for m in gateway.client(gateway.issued["tokens"]).models.list()] == ["n"]


def test_admin_routes_are_shut_to_every_key(gateway) -> None:
    headers = {"Authorization": f"Bearer {gateway.issued['ops']}"}
    for method, path in (("GET", "/key/list"), ("POST", "/key/generate"), ("GET", "/health"), ("POST", "/model/new")):
        answer = httpx.request(method, f"{gateway.url}{path}", headers=headers, json={})
        assert answer.status_code in (401, 403), (path, answer.status_code, answer.text[:200])


def test_adapters_and_wildcard_route_to_the_adapter_name_with_the_upstream_key(gateway, stub) -> None:
    for model, upstream in (("m:x", "x"), ("m:promoted-later", "promoted-later"), ("m", "m")):
        answer = chat(gateway, "ops", model)
        assert answer.choices[0].message.content
        last = httpx.get(f"{stub}/stub/last").json()
        assert last["body"]["model"] == upstream
        assert last["headers"]["authorization"] == "Bearer upstream-secret"  # never the client's key


def test_vllm_parameters_and_streaming_pass_through(gateway, stub) -> None:
    chat(gateway, "ops", "n", extra_body={"top_k": 3, "repetition_penalty": 1.1, "min_p": 0.05})
    body = httpx.get(f"{stub}/stub/last").json()["body"]
    assert (body["top_k"], body["repetition_penalty"], body["min_p"]) == (3, 1.1, 0.05)
    stream = gateway.client(gateway.issued["ops"]).chat.completions.create(
        model="n", messages=HELLO, max_tokens=4, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "x " * 4
    assert chunks[-1].usage.completion_tokens == 4


def test_rpm_is_429_with_retry_after(gateway) -> None:
    for _ in range(2):  # a run that straddles a minute boundary starts a fresh window: once more
        minute = windows(datetime.now(UTC)).minute
        answers = []
        for _ in range(4):
            try:
                chat(gateway, "search", "m")
                answers.append(200)
            except openai.RateLimitError as error:
                answers.append((429, error_body(error)["param"], int(error.response.headers["retry-after"])))
        if windows(datetime.now(UTC)).minute == minute:
            break
    assert answers[:3] == [200, 200, 200]
    status, param, retry_after = answers[3]
    assert (status, param) == (429, "rpm") and 1 <= retry_after <= 60


def test_tpm_counts_tokens_of_earlier_requests(gateway) -> None:
    chat(gateway, "tokens", "n")  # 4 prompt + 4 completion tokens, counted once answered
    gateway.wait_rows("tokens", 1)
    time.sleep(0.2)
    chat(gateway, "tokens", "n")
    gateway.wait_rows("tokens", 2)
    time.sleep(0.2)
    status, body, headers = refusal(lambda: chat(gateway, "tokens", "n"))
    assert (status, body["type"], body["param"]) == (429, "rate_limit_error", "tpm")
    assert "limited to 20 tokens per minute" in body["message"] and "retry-after" in headers


def test_budget_exhaustion_is_429_insufficient_quota(gateway) -> None:
    spent = 0.0
    for _ in range(2):  # each costs (prompt + 2 x completion) / 1e6 USD: together at least the $0.00003
        answer = chat(gateway, "budget", "m")
        spent += (answer.usage.prompt_tokens + 2 * answer.usage.completion_tokens) / 1e6
    gateway.wait_rows("budget", 2)
    time.sleep(0.2)
    assert spent >= 0.00003
    status, body, headers = refusal(lambda: chat(gateway, "budget", "m"))
    assert (status, body["type"], body["param"]) == (429, "insufficient_quota", "monthly_budget_usd")
    assert int(headers["retry-after"]) > 0


@pytest.mark.parametrize(("route", "adapter"), [("m:x", "x"), ("m:promoted-later", "promoted-later"), ("n", None)])
def test_usage_rows_match_what_the_upstream_reported(gateway, route: str, adapter: str | None) -> None:
    before = len(gateway.rows("ops"))
    answer = chat(gateway, "ops", route)
    rows = [r for r in gateway.wait_rows("ops", before + 1) if r["route"] == route]
    assert rows, gateway.rows("ops")
    row = rows[-1]
    assert (row["model"], row["adapter"], row["status"]) == (route.split(":")[0], adapter, 200)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (answer.usage.prompt_tokens, answer.usage.completion_tokens)
    assert row["cost_usd"] == pytest.approx((answer.usage.prompt_tokens + 2 * answer.usage.completion_tokens) / 1e6)
    assert row["latency_ms"] > 0
    log = gateway.log()
    assert '"Namespace":"LLMFleet/Gateway"' in log and '"Fleet":"it","Stage":"test","Consumer":"ops"' in log


def test_a_model_down_falls_back(gateway, stub) -> None:
    answer = chat(gateway, "ops", "down")
    assert answer.choices[0].message.content
    assert httpx.get(f"{stub}/stub/last").json()["body"]["model"] == "m"


def test_usage_command_sums_per_consumer_and_model(gateway) -> None:
    gateway.wait_rows("budget", 2)
    result = subprocess.run(
        [sys.executable, "-m", "llmfleet.scripts", "usage", "--since", "1h", "--database", gateway.database_url, "--json"],
        capture_output=True, text=True, check=True,
    )
    rows = {(r["consumer"], r["model"]): r for r in json.loads(result.stdout)["rows"]}
    budget = rows[("budget", "m")]
    assert budget["requests"] >= 2 and budget["errors"] == 0 and budget["cost_usd"] >= 0.00003
    assert sum(r["prompt_tokens"] for r in gateway.rows("budget")) == budget["prompt_tokens"]


def test_the_proxy_writes_nothing_under_home_or_its_packages(gateway) -> None:
    """What a read-only root filesystem would refuse: files written under HOME or the packages the
    proxy runs from, since it started (compiled bytecode aside: Python skips it when it cannot write)."""
    find = "import importlib.util as u; print(u.find_spec('litellm').origin)"
    origin = subprocess.run([local_gateway.gateway_python(), "-c", find], capture_output=True, text=True, check=True)
    packages = [Path(origin.stdout.strip()).parents[1] / name for name in ("litellm", "fastapi", "starlette")]
    written = [
        path for root in (gateway.home, *packages) for path in root.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.stat().st_mtime >= gateway.started
    ]
    assert list(gateway.home.iterdir()) == [] and written == []
