"""The front door of a real serving container (entrypoint + CPU vLLM, moto's S3) that runs with
an API key, called over loopback from this machine's non-loopback source address, as a client behind the load
balancer would call it: the key is checked before the body is read, the plan's bounds are
refused by the middleware before vLLM sees them, and only the forwarded paths and the health
checks answer; vLLM's own routes (from its /openapi.json) and the path tricks do not."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx2
import psutil
import pytest

from llmfleet.model_store.contract.front_door import forwarded_paths, HEALTH_PATHS, VLLM_ADMIN_PATHS
from llmfleet.model_store.contract.request_limits import text_limits
from tests.e2e.conftest import MODEL, Fleet, Server, boot_server, client_from_outside, connect_from_outside

pytestmark = pytest.mark.timeout(600)
KEY = "sk-e2e-front-door"
AUTH = {"Authorization": f"Bearer {KEY}"}
MIB = 2**20
# What a refused body may add to the API server's memory: Python's allocator and socket
# buffers move by a few MiB on their own; a body read into memory would add its 64 MiB at least.
RSS_GROWTH_LIMIT = 24 * MIB
DOOR_ERRORS = {"NotFoundError", "ForbiddenError"}


@pytest.fixture(scope="module")
def keyed(fleet: Fleet) -> Iterator[Server]:
    """This file's server: an ECS task's container with an API key."""
    server = boot_server(fleet, "front-door", VLLM_API_KEY=KEY)
    yield server
    server.stop()




def api_server(server: Server) -> psutil.Process:
    """The process the middleware runs in: vLLM's API server, the entrypoint's one child."""
    (process,) = psutil.Process(server.process.pid).children()
    return process


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def exchange(port: int, request: bytes, timeout: float = 30) -> bytes:
    """Send raw bytes on one connection (its last request says `Connection: close`); all the
    server answered until it closed."""
    with connect_from_outside(port, timeout) as connection:
        connection.sendall(request)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    return received


def test_an_unauthenticated_64_mib_body_gets_401_before_it_is_sent_and_costs_no_memory(keyed: Server):
    process = api_server(keyed)
    baseline = process.memory_info().rss
    peak, sampling = baseline, True

    def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {64 * MIB}\r\n\r\n"
    with connect_from_outside(keyed.port, timeout=10) as connection:
        connection.sendall(head.encode())  # the body only after the answer: reading it first would wait here
        answer = connection.recv(65536)
        try:
            for _ in range(64):
                connection.sendall(b" " * MIB)
        except OSError:
            pass  # the server may close a connection whose body it will not read
    time.sleep(0.5)
    sampling = False
    sampler.join()

    assert status_of(answer) == 401, answer[:200]
    assert peak - baseline < RSS_GROWTH_LIMIT, f"RSS grew {(peak - baseline) / MIB:.1f} MiB"


def test_bounds_are_refused_by_the_middleware_and_requests_within_them_answer(keyed: Server, fleet: Fleet):
    limits = text_limits(fleet.plan)
    context = fleet.plan.vllm.max_model_len
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "Hello, how are you today?"}], "max_tokens": 8, "temperature": 0}
    image = {"type": "image_url", "image_url": {"url": "http://169.254.169.254/latest/meta-data/iam/"}}
    refused = {
        "n": {**chat, "n": 10_000},
        "max_tokens": {**chat, "max_tokens": context + 1},
        "top_logprobs": {**chat, "logprobs": True, "top_logprobs": 10_000},
        "messages[0].content[0].image_url.url": {**chat, "messages": [{"role": "user", "content": [image]}]},
    }
    with client_from_outside(keyed.port) as http:
        answers = {field: http.post("/v1/chat/completions", json=body, headers=AUTH) for field, body in refused.items()}
        logprobs = http.post("/v1/completions", json={"model": MODEL, "prompt": "x", "logprobs": -1}, headers=AUTH)
        deep = http.post("/v1/chat/completions", content=b"[" * 200_000 + b"]" * 200_000, headers={**AUTH, "content-type": "application/json"})
        unauthenticated = http.post("/v1/chat/completions", json=chat)
        ok = http.post("/v1/chat/completions", json={**chat, "n": limits.max_n, "temperature": 0.8}, headers=AUTH)
        adapter = http.post("/v1/chat/completions", json={**chat, "model": "medical"}, headers=AUTH)

    for field, response in [*answers.items(), ("logprobs", logprobs), ("body", deep)]:
        assert response.status_code == 400, (field, response.text)
        assert response.json()["error"]["param"] == field  # vLLM's own errors carry no param
    assert f"from 1 to {limits.max_n}" in answers["n"].json()["error"]["message"]
    assert f"from 1 to {context}" in answers["max_tokens"].json()["error"]["message"]
    assert unauthenticated.status_code == 401
    assert ok.status_code == 200, ok.text
    assert len(ok.json()["choices"]) == limits.max_n and ok.json()["choices"][0]["message"]["content"]
    assert adapter.status_code == 200, adapter.text


def test_only_the_forwarded_paths_and_health_checks_answer_a_remote_caller_with_the_key(keyed: Server):
    with keyed.client() as local:
        routes = set(local.get("/openapi.json").json()["paths"])  # this container itself may read it
    candidates = {path.replace("{", "").replace("}", "") for path in routes} | set(VLLM_ADMIN_PATHS) | set(forwarded_paths("text"))

    with client_from_outside(keyed.port) as http:
        answers = {path: http.get(path, headers=AUTH) for path in sorted(candidates)}

    def refused_by_door(response: httpx2.Response) -> bool:
        try:
            return response.status_code in (403, 404) and response.json()["error"]["type"] in DOOR_ERRORS
        except (ValueError, KeyError, TypeError):
            return False

    reachable = {path for path, response in answers.items() if not refused_by_door(response)}
    assert len(routes) > 20  # vLLM's route table, not an empty schema
    assert reachable == set(forwarded_paths("text")) | set(HEALTH_PATHS)


def test_the_servers_views_need_the_key_or_loopback(keyed: Server):
    with client_from_outside(keyed.port) as http:
        adapters = (http.get("/llmfleet/adapters").status_code, http.get("/llmfleet/adapters", headers=AUTH).status_code)
        metrics = (http.get("/metrics").status_code, http.get("/metrics", headers=AUTH).status_code)
    with keyed.client() as local:
        local_views = (local.get("/llmfleet/adapters").status_code, local.get("/metrics").status_code)

    assert adapters == (401, 200)
    assert metrics == (403, 403)
    assert local_views == (200, 200)


def test_no_path_trick_reaches_a_runtime_lora_route(keyed: Server, fleet: Fleet):
    body = json.dumps({"lora_name": "evil", "lora_path": str(fleet.model_dir)}).encode()

    def post(target: str, extra: str = "Connection: close\r\n") -> bytes:
        head = f"POST {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
        return head.encode() + body

    targets = [
        "/v1/load_lora_adapter",
        "/v1/unload_lora_adapter",
        "/adapters",
        "//v1/load_lora_adapter",
        "/v1//load_lora_adapter",
        "/v1/%2e%2e/v1/load_lora_adapter",
        "/v1%2Fload_lora_adapter",
        "/V1/LOAD_LORA_ADAPTER",
        "/v1/load_lora_adapter;x=1",
        "/v1/load_lora_adapter%00",
        "/v1/load_lora_adapter/",
        f"http://127.0.0.1:{keyed.port}/v1/load_lora_adapter",
    ]
    spoofed = "X-Forwarded-For: 127.0.0.1\r\nForwarded: for=127.0.0.1\r\nX-Real-IP: 127.0.0.1\r\nConnection: close\r\n"
    requests = [post(target) for target in targets] + [post("/v1/load_lora_adapter", spoofed)]

    answers = [exchange(keyed.port, request) for request in requests]
    # A request pipelined behind an allowed one on the same connection, as a smuggled one would arrive.
    pipelined = exchange(keyed.port, f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\r\n".encode() + post("/v1/load_lora_adapter"))

    statuses = [status_of(answer) for answer in answers]
    assert all(status in (400, 403, 404) for status in statuses), dict(zip(targets, statuses, strict=False))
    for answer in answers:
        if status_of(answer) in (403, 404):  # refused by the door, not by vLLM's router
            assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["type"] in DOOR_ERRORS, answer[:300]
    assert [int(part.split(b" ", 1)[0]) for part in pipelined.split(b"HTTP/1.1 ")[1:]] == [200, 403]
    with keyed.client() as local:
        served = local.get("/v1/models", headers=AUTH).json()["data"]
    assert "evil" not in {entry["id"] for entry in served}
