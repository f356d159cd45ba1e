"""The front door of a vLLM server, driven over ASGI as vLLM's uvicorn drives the middleware:
who may reach which path, the API key checked before a byte of the body is read, bounded
reads, and the plan's bounds on what a key holder may ask. The middleware is built from the
environment vLLM's child inherits (VLLM_API_KEY, LLMFLEET_TARGET, LLMFLEET_PLAN) with the example
fleet's qwen3-small plan; callers come from a non-loopback address unless a test says otherwise."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import httpx2
import pytest

from llmfleet.containers.entrypoint import middleware as middleware_module
from llmfleet.containers.entrypoint.middleware import LlmfleetMiddleware
from llmfleet.containers.entrypoint.routing import RouteTable, StateDir
from llmfleet.model_store.contract.container import PLAN_ENV, STATE_DIR_ENV, TARGET_ENV, VLLM_API_KEY_ENV
from llmfleet.model_store.planning.fleet import load_and_plan
from llmfleet.model_store.contract.front_door import forwarded_paths, HEALTH_PATHS, VLLM_ADMIN_PATHS
from llmfleet.model_store.contract.plan import ServingPlan
from llmfleet.model_store.contract.request_limits import RequestLimits, text_limits
from tests.conftest import REPO

KEY = "sk-front-door-test"
AUTH = {"Authorization": f"Bearer {KEY}"}
REMOTE = ("10.0.3.7", 40000)
LOCAL = ("127.0.0.1", 40000)
MIB = 2**20
CHAT = "/v1/chat/completions"
ADMIN_PATHS = ("/v1/load_lora_adapter", "/v1/unload_lora_adapter", "/adapters", "/adapters/medical")
# vLLM 0.32 routes besides its admin list that the ALB never forwards (api_server route table).
OTHER_VLLM_PATHS = (
    "/v1/responses",
    "/v1/audio/transcriptions",
    "/v1/rerank",
    "/v1/score",
    "/pooling",
    "/classify",
    "/version",
    "/load",
    "/docs",
    "/openapi.json",
    "/v2/rerank",
)

pytestmark = pytest.mark.timeout(120)


class Recorder:
    """Stands in for vLLM's app: records each request that reached it, answers 200."""

    def __init__(self) -> None:
        self.seen: list[dict] = []

    async def __call__(self, scope, receive, send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.seen.append({"path": scope["path"], "headers": dict(scope["headers"]), "body": body})
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"ok": true}'})


class CountedReceives:
    """The ASGI server's side: counts how often the middleware asked for body bytes."""

    def __init__(self, app) -> None:
        self.app, self.receives = app, 0

    async def __call__(self, scope, receive, send) -> None:
        async def counted():
            self.receives += 1
            return await receive()

        await self.app(scope, counted, send)


@pytest.fixture(scope="module")
def plan() -> ServingPlan:
    _, plans = load_and_plan(REPO / "fleet.yaml")
    return next(p for p in plans if p.model_name == "qwen3-small")


@pytest.fixture
def make(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, plan: ServingPlan):
    """A middleware over `app` as vLLM makes it: from the environment of its process."""
    StateDir(tmp_path).write_routes(RouteTable("qwen3-small", "server-1", {"medical": "v2", "legal": "v1"}))

    def make(app, *, target: str = "ecs", key: str | None = KEY, serving: ServingPlan = plan, **keywords) -> LlmfleetMiddleware:
        monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path))
        monkeypatch.setenv(PLAN_ENV, serving.to_json())
        monkeypatch.setenv(TARGET_ENV, target)
        if key is None:
            monkeypatch.delenv(VLLM_API_KEY_ENV, raising=False)
        else:
            monkeypatch.setenv(VLLM_API_KEY_ENV, key)
        return LlmfleetMiddleware(app, **keywords)

    return make


def call(app, method: str, path: str, *, client=REMOTE, **kwargs) -> httpx2.Response:
    async def go() -> httpx2.Response:
        transport = httpx2.ASGITransport(app=app, client=client)
        async with httpx2.AsyncClient(transport=transport, base_url="http://server") as http:
            return await http.request(method, path, **kwargs)

    return asyncio.run(go())


async def raw_call(app, path: str, *, body: bytes = b"", headers=(), client=REMOTE, method: str = "POST", raw_path: bytes | None = None) -> int:
    """One request as uvicorn hands it over (the body in one message); the status answered."""
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": raw_path if raw_path is not None else path.encode(),
        "query_string": b"",
        "headers": [(b"content-length", str(len(body)).encode()), *headers],
        "client": client,
    }
    sent: list[dict] = []
    delivered = False

    async def receive() -> dict:
        nonlocal delivered
        if delivered:
            return {"type": "http.disconnect"}
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"]


def chat_body(**fields) -> dict:
    return {"model": "qwen3-small", "messages": [{"role": "user", "content": "hi"}], **fields}


# --- the key, before the body -------------------------------------------------------------


def test_an_unauthenticated_64_mib_body_is_refused_without_reading_a_byte(make):
    recorder = Recorder()
    counted = CountedReceives(make(recorder))

    response = call(counted, "POST", CHAT, content=b"{" + b" " * (64 * MIB) + b"}", headers={"content-type": "application/json"})

    assert response.status_code == 401
    assert response.json()["error"]["type"] == "AuthenticationError"
    assert counted.receives == 0
    assert recorder.seen == []


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", f"Basic {KEY}", f"Bearer {KEY}x", f"Bearer  {KEY}", KEY, f"Bearer {KEY[:-1]}"]
)
def test_a_missing_or_wrong_key_is_401_unread(make, authorization: str | None):
    recorder = Recorder()
    counted = CountedReceives(make(recorder))
    headers = {"authorization": authorization} if authorization else {}

    response = call(counted, "POST", CHAT, json=chat_body(), headers=headers)

    assert response.status_code == 401
    assert (counted.receives, recorder.seen) == (0, [])


def test_the_key_is_compared_as_vllm_compares_it(make):
    """vLLM takes the scheme case-insensitively and the token after the first space."""
    recorder = Recorder()
    middleware = make(recorder)
    schemes = ("Bearer", "bearer", "BEARER", "Token")

    statuses = [call(middleware, "POST", CHAT, json=chat_body(), headers={"authorization": f"{scheme} {KEY}"}).status_code for scheme in schemes]

    assert statuses == [200, 200, 200, 401]
    assert len(recorder.seen) == 3


def test_loopback_callers_need_the_key_on_client_paths_too(make):
    recorder = Recorder()

    assert call(make(recorder), "POST", CHAT, json=chat_body(), client=LOCAL).status_code == 401
    assert call(make(recorder), "POST", CHAT, json=chat_body(), client=LOCAL, headers=AUTH).status_code == 200


def test_without_a_configured_key_client_paths_are_open_as_in_vllm_and_nothing_else(make):
    recorder = Recorder()
    middleware = make(recorder, key=None)

    assert call(middleware, "POST", CHAT, json=chat_body()).status_code == 200
    assert call(middleware, "POST", "/tokenize", json={"prompt": "x"}).status_code == 404
    assert [seen["path"] for seen in recorder.seen] == [CHAT]


# --- bounded reads ------------------------------------------------------------------------


def test_an_authenticated_oversize_body_is_413_before_it_is_read(make, plan: ServingPlan):
    recorder = Recorder()
    counted = CountedReceives(make(recorder))
    too_big = text_limits(plan).max_body_bytes + 1

    response = call(counted, "POST", CHAT, content=b" " * too_big, headers={**AUTH, "content-type": "application/json"})

    assert response.status_code == 413
    assert str(text_limits(plan).max_body_bytes) in response.json()["error"]["message"]
    assert (counted.receives, recorder.seen) == (0, [])


def test_a_chunked_oversize_body_is_413_once_the_limit_is_passed_not_drained(make, plan: ServingPlan):
    """Without Content-Length the bytes are counted as they come; the rest is never read."""
    recorder = Recorder()
    counted = CountedReceives(make(recorder))
    chunks = text_limits(plan).max_body_bytes // MIB + 8

    async def body():
        for _ in range(chunks):
            yield b" " * MIB

    response = call(counted, "POST", CHAT, content=body(), headers={**AUTH, "content-type": "application/json"})

    assert response.status_code == 413
    assert counted.receives < chunks
    assert recorder.seen == []


def test_a_stalled_body_is_408_after_the_read_deadline(make):
    recorder = Recorder()
    limits = RequestLimits(max_body_bytes=MIB, body_seconds=0.2, max_n=4, max_tokens=512)
    middleware = make(recorder, limits=limits)
    scope = {"type": "http", "method": "POST", "path": CHAT, "raw_path": CHAT.encode(), "query_string": b"", "client": REMOTE,
             "headers": [(b"authorization", f"Bearer {KEY}".encode()), (b"content-type", b"application/json"), (b"content-length", b"1000")]}  # fmt: skip
    sent: list[dict] = []
    calls = 0

    async def receive() -> dict:
        nonlocal calls
        calls += 1
        if calls == 1:
            return {"type": "http.request", "body": b'{"model": ', "more_body": True}
        await asyncio.sleep(3600)  # the client sends nothing more and keeps the connection open
        raise AssertionError("unreachable")

    async def send(message: dict) -> None:
        sent.append(message)

    async def go() -> None:
        await asyncio.wait_for(middleware(scope, receive, send), timeout=10)

    asyncio.run(go())

    assert sent[0]["status"] == 408
    assert recorder.seen == []


@pytest.mark.parametrize("depth", [200_000, 65])
def test_deeply_nested_json_is_a_400_not_a_crash(make, depth: int):
    recorder = Recorder()
    body = b'{"model": "qwen3-small", "messages": ' + b"[" * depth + b"]" * depth + b"}"

    response = call(make(recorder), "POST", CHAT, content=body, headers={**AUTH, "content-type": "application/json"})

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "body"
    assert "64 levels" in response.json()["error"]["message"]
    assert recorder.seen == []


def test_large_bodies_are_parsed_off_the_event_loop(make, monkeypatch: pytest.MonkeyPatch, plan: ServingPlan):
    recorder = Recorder()
    middleware = make(recorder)
    threads: list[bool] = []
    parse = middleware_module.parse_json

    def recording(body: bytes, max_depth: int):
        threads.append(threading.current_thread() is threading.main_thread())
        return parse(body, max_depth)

    monkeypatch.setattr(middleware_module, "parse_json", recording)
    small = chat_body()
    large = chat_body(messages=[{"role": "user", "content": "x" * (text_limits(plan).inline_parse_bytes + 1)}])

    for body in (small, large):
        assert call(middleware, "POST", CHAT, json=body, headers=AUTH).status_code == 200

    assert threads == [True, False]
    assert len(recorder.seen[1]["body"]) > text_limits(plan).inline_parse_bytes


# --- names and in-flight counts -----------------------------------------------------------


def test_ten_thousand_unique_model_names_leave_nothing_behind(make):
    recorder = Recorder()
    middleware = make(recorder)

    async def go() -> tuple[list[int], list[int]]:
        unauthenticated, authenticated = [], []
        for i in range(10_000):
            body = json.dumps({"model": f"attacker-{i:05d}-" + "x" * 100, "prompt": "x"}).encode()
            headers = [(b"content-type", b"application/json")]
            unauthenticated.append(await raw_call(middleware, "/v1/completions", body=body, headers=headers))
            authenticated.append(await raw_call(middleware, "/v1/completions", body=body, headers=[*headers, (b"authorization", f"Bearer {KEY}".encode())]))
        return unauthenticated, authenticated

    unauthenticated, authenticated = asyncio.run(go())

    assert set(unauthenticated) == {401}
    assert set(authenticated) == {200}
    assert len(middleware.in_flight) == 0
    assert middleware.describe()["in_flight"] == {}


def test_a_served_adapter_is_counted_while_in_flight_and_forgotten_after(make):
    release = asyncio.Event()
    counts: list[dict] = []

    async def slow_app(scope, receive, send) -> None:
        await receive()
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    middleware = make(slow_app)

    async def go() -> None:
        transport = httpx2.ASGITransport(app=middleware, client=REMOTE)
        async with httpx2.AsyncClient(transport=transport, base_url="http://server") as http:
            request = asyncio.create_task(http.post("/v1/completions", json={"model": "medical", "prompt": "x"}, headers=AUTH))
            while not middleware.in_flight["medical@v2"]:
                await asyncio.sleep(0)
            counts.append(dict(middleware.in_flight))
            release.set()
            await request
            counts.append(dict(middleware.in_flight))

    asyncio.run(go())

    assert counts == [{"medical@v2": 1}, {}]


def test_over_long_model_names_are_refused_naming_the_field(make):
    recorder = Recorder()
    middleware = make(recorder, target="sagemaker")
    long_name = "m" * 130

    by_body = call(middleware, "POST", CHAT, json=chat_body(model=long_name), headers=AUTH)
    by_header = call(middleware, "POST", "/invocations", json={"inputs": "x"}, headers={"X-Amzn-SageMaker-Adapter-Identifier": long_name})

    assert (by_body.status_code, by_body.json()["error"]["param"]) == (400, "model")
    assert (by_header.status_code, by_header.json()["error"]["param"]) == (400, "x-amzn-sagemaker-adapter-identifier")
    assert "129" in by_body.json()["error"]["message"] and "130" in by_body.json()["error"]["message"]
    assert recorder.seen == []


# --- deny by default ----------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted({*VLLM_ADMIN_PATHS, *OTHER_VLLM_PATHS} - {*HEALTH_PATHS, "/metrics", *ADMIN_PATHS}))
def test_paths_off_the_allowlist_are_404_to_remote_callers_even_with_the_key(make, path: str):
    recorder = Recorder()

    response = call(make(recorder), "POST", path, json={}, headers=AUTH)

    assert response.status_code == 404
    assert response.json()["error"]["type"] == "NotFoundError"
    assert recorder.seen == []


@pytest.mark.parametrize("path", ["/tokenize", "/pause", "/update_weights", "/server_info", "/v1/responses"])
def test_paths_off_the_allowlist_serve_this_container_only(make, path: str):
    recorder = Recorder()
    middleware = make(recorder)

    remote = call(middleware, "POST", path, json={}, headers=AUTH)
    local = call(middleware, "POST", path, json={}, client=LOCAL)

    assert (remote.status_code, local.status_code) == (404, 200)
    assert [seen["path"] for seen in recorder.seen] == [path]


def test_the_servers_self_description_needs_the_key_unless_loopback(make):
    middleware = make(Recorder())

    assert call(middleware, "GET", "/llmfleet/adapters").status_code == 401
    assert call(middleware, "GET", "/llmfleet/adapters", headers=AUTH).json()["model"] == "qwen3-small"
    assert call(middleware, "GET", "/llmfleet/adapters", client=LOCAL).status_code == 200


def test_metrics_are_served_to_this_container_only(make):
    """The metrics publisher scrapes over loopback; the load balancer never forwards /metrics."""
    recorder = Recorder()
    middleware = make(recorder)

    assert call(middleware, "GET", "/metrics").status_code == 403
    assert call(middleware, "GET", "/metrics", headers=AUTH).status_code == 403
    assert recorder.seen == []
    assert call(middleware, "GET", "/metrics", client=LOCAL).status_code == 200


def test_invocations_is_served_only_on_sagemaker(make):
    recorder = Recorder()
    body = {"inputs": "hi", "parameters": {"max_new_tokens": 4}}

    on_ecs = call(make(recorder, target="ecs"), "POST", "/invocations", json=body, headers=AUTH)
    assert recorder.seen == []
    on_sagemaker = call(make(recorder, target="sagemaker"), "POST", "/invocations", json=body)

    assert (on_ecs.status_code, on_sagemaker.status_code) == (404, 200)
    assert recorder.seen[-1]["path"] == "/invocations"


def test_the_container_allowlist_is_the_load_balancers(make):
    """A keyed remote caller (what the ALB forwards) reaches exactly the forwarded paths and
    the health checks; every other path this test can name is refused."""
    recorder = Recorder()
    middleware = make(recorder, target="ecs")
    candidates = {*forwarded_paths("text"), *HEALTH_PATHS, *VLLM_ADMIN_PATHS, *OTHER_VLLM_PATHS, *ADMIN_PATHS, "/v1/embeddings", "/", "/v1", "/v1/"}

    reachable = {path for path in candidates if call(middleware, "GET", path, headers=AUTH).status_code not in (401, 403, 404)}

    assert reachable == {*forwarded_paths("text"), *HEALTH_PATHS}


def test_a_websocket_to_a_path_off_the_allowlist_is_closed_before_it_opens(make):
    recorder = Recorder()
    middleware = make(recorder)
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "websocket.connect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/v1/realtime", "raw_path": b"/v1/realtime", "headers": [], "client": REMOTE}
    asyncio.run(middleware(scope, receive, send))

    assert sent == [{"type": "websocket.close", "code": 1008}]
    assert recorder.seen == []


# --- the path-trick suite -----------------------------------------------------------------

# (path as uvicorn decodes it into scope["path"], the raw request target)
PATH_TRICKS = [
    ("//v1/load_lora_adapter", b"//v1/load_lora_adapter"),
    ("/v1//load_lora_adapter", b"/v1//load_lora_adapter"),
    ("/v1/./load_lora_adapter", b"/v1/./load_lora_adapter"),
    ("/v1/../v1/load_lora_adapter", b"/v1/%2e%2e/v1/load_lora_adapter"),
    ("/v1/../load_lora_adapter", b"/v1/%2e%2e/load_lora_adapter"),
    ("/v1/load_lora_adapter", b"/v1%2Fload_lora_adapter"),
    ("/v1/load_lora_adapter", b"/v1%2fload_lora_adapter"),
    ("/V1/LOAD_LORA_ADAPTER", b"/V1/LOAD_LORA_ADAPTER"),
    ("/v1/Load_Lora_Adapter", b"/v1/Load_Lora_Adapter"),
    ("/v1/load_lora_adapter;x=1", b"/v1/load_lora_adapter;x=1"),
    ("/v1/load_lora_adapter;", b"/v1/load_lora_adapter;"),
    ("/v1/load_lora_adapter\x00", b"/v1/load_lora_adapter%00"),
    ("/v1/load_lora_adapter/", b"/v1/load_lora_adapter/"),
    ("/v1/chat/completions/../../v1/load_lora_adapter", b"/v1/chat/completions/../../v1/load_lora_adapter"),
    ("/adapters/../v1/load_lora_adapter", b"/adapters/../v1/load_lora_adapter"),
    ("http://127.0.0.1:8000/v1/load_lora_adapter", b"http://127.0.0.1:8000/v1/load_lora_adapter"),
    ("/v1/unload_lora_adapter%20", b"/v1/unload_lora_adapter%2520"),
    ("/adapters%2Fmedical", b"/adapters%252Fmedical"),
]


def test_no_admin_route_plain_or_tricked_answers_a_remote_caller_with_the_key(make):
    """One test for the whole suite: the app (vLLM's router) must see none of them, while the
    adapter agent on loopback still reaches the plain routes."""
    recorder = Recorder()
    middleware = make(recorder)
    body = json.dumps({"lora_name": "evil", "lora_path": "/tmp/evil"}).encode()
    headers = [(b"content-type", b"application/json"), (b"authorization", f"Bearer {KEY}".encode())]
    plain = [(path, path.encode()) for path in ADMIN_PATHS]

    statuses = {raw: asyncio.run(raw_call(middleware, path, body=body, headers=headers, raw_path=raw)) for path, raw in [*plain, *PATH_TRICKS]}

    assert {raw: status for raw, status in statuses.items() if status not in (403, 404)} == {}
    assert [statuses[raw] for _, raw in plain] == [403] * len(plain)
    assert [seen["path"] for seen in recorder.seen] == []
    local = [asyncio.run(raw_call(middleware, path, body=body, headers=headers, client=LOCAL)) for path in ADMIN_PATHS]
    assert local == [200] * len(ADMIN_PATHS)
    assert [seen["path"] for seen in recorder.seen] == list(ADMIN_PATHS)


@pytest.mark.parametrize(
    "spoofed",
    [
        [(b"x-forwarded-for", b"127.0.0.1")],
        [(b"x-real-ip", b"127.0.0.1")],
        [(b"forwarded", b"for=127.0.0.1")],
        [(b"x-forwarded-for", b"127.0.0.1, 10.0.3.7"), (b"host", b"localhost")],
    ],
)
def test_a_spoofed_forwarding_header_from_a_remote_peer_is_not_loopback(make, spoofed):
    recorder = Recorder()
    middleware = make(recorder)
    body = json.dumps({"lora_name": "evil", "lora_path": "/tmp/evil"}).encode()

    statuses = [asyncio.run(raw_call(middleware, path, body=body, headers=spoofed)) for path in ADMIN_PATHS]
    statuses.append(asyncio.run(raw_call(middleware, "/tokenize", body=body, headers=spoofed)))

    assert statuses == [403] * len(ADMIN_PATHS) + [404]
    assert recorder.seen == []


# --- bounds for key holders ---------------------------------------------------------------


# (path, field, refused values, the largest value allowed) for the example plan: max_model_len
# 8192, max_num_seqs 79 (so n up to 16), vLLM's 20 logprobs.
BOUNDS = [
    (CHAT, "n", (16384, 17, 0, "16384", 1e9, -1), 16),
    (CHAT, "best_of", (64, 17), 16),
    (CHAT, "max_tokens", (8193, 10**9, 0), 8192),
    (CHAT, "max_completion_tokens", (8193, 10**9), 8192),
    (CHAT, "top_logprobs", (21, 10**6, -1), 20),
    (CHAT, "prompt_logprobs", (-1, 21), 20),
    ("/v1/completions", "logprobs", (21, -1, "5"), 20),
]


@pytest.mark.parametrize(("path", "field", "refused", "allowed"), BOUNDS, ids=[bound[1] for bound in BOUNDS])
def test_sampling_bounds_from_the_plan_are_400_naming_field_value_and_range(make, path: str, field: str, refused: tuple, allowed: int):
    recorder = Recorder()
    middleware = make(recorder)

    def body(value) -> dict:
        fields = {field: value, **({"logprobs": True} if field == "top_logprobs" else {})}
        return chat_body(**fields) if path == CHAT else {"model": "qwen3-small", "prompt": "x", **fields}

    for value in refused:
        response = call(middleware, "POST", path, json=body(value), headers=AUTH)
        error = response.json()["error"]
        assert (response.status_code, error["param"]) == (400, field), value
        assert repr(value) in error["message"] and f"from {0 if 'logprobs' in field else 1} to {allowed}" in error["message"]
    assert recorder.seen == []
    assert call(middleware, "POST", path, json=body(allowed), headers=AUTH).status_code == 200
    assert json.loads(recorder.seen[0]["body"]) == body(allowed)


def test_sagemaker_max_new_tokens_is_bounded_after_translation(make):
    recorder = Recorder()
    body = {"inputs": "hi", "parameters": {"max_new_tokens": 10**6}}

    response = call(make(recorder, target="sagemaker"), "POST", "/invocations", json=body)

    assert (response.status_code, response.json()["error"]["param"]) == (400, "max_tokens")
    assert recorder.seen == []


def image_message(part: dict) -> dict:
    return chat_body(messages=[{"role": "user", "content": [{"type": "text", "text": "what is this?"}, part]}])


REMOTE_MEDIA = [
    {"type": "image_url", "image_url": {"url": "https://images.example.com/cat.png"}},
    {"type": "image_url", "image_url": {"url": "http://169.254.169.254/latest/meta-data/"}},
    {"type": "audio_url", "audio_url": {"url": "https://example.org/a.mp3"}},
    {"type": "video_url", "video_url": {"url": "https://example.org/v.mp4"}},
    {"image_url": "https://example.org/typeless.png"},
    {"type": "input_image", "image_url": "https://example.org/responses.png"},
    {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}},
    {"type": "image_url", "image_url": {"url": "ftp://example.org/x.png"}},
]


@pytest.mark.parametrize("part", REMOTE_MEDIA)
def test_media_urls_are_refused_without_allowlisted_domains_inline_media_is_not(make, part: dict):
    recorder = Recorder()
    middleware = make(recorder)
    inline = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}

    response = call(middleware, "POST", CHAT, json=image_message(part), headers=AUTH)

    error = response.json()["error"]
    assert response.status_code == 400
    assert error["param"].startswith("messages[0].content[1].")
    assert "serving.media_domains is empty" in error["message"]
    assert recorder.seen == []
    assert call(middleware, "POST", CHAT, json=image_message(inline), headers=AUTH).status_code == 200


MEDIA_URLS = {
    "https://images.example.com/cat.png": 200,
    "HTTPS://IMAGES.EXAMPLE.COM/cat.png": 200,  # urllib3, as vLLM, lowercases the host
    "https://images.example.com:8443/cat.png": 200,
    "https://evil.example.org/cat.png": 400,
    "https://images.example.com.evil.example.org/cat.png": 400,
    "https://images.example.com@evil.example.org/cat.png": 400,
    "https://evil.example.org/?https://images.example.com/": 400,
    "https://evil.example.org#@images.example.com": 400,
    "file://images.example.com/etc/passwd": 400,
    # urllib3 ends the host at the backslash and vLLM fetches the URL it normalised:
    # https://images.example.com/%5C@evil.example.org/
    "https://images.example.com\\@evil.example.org/": 200,
}


def test_media_urls_pass_from_allowlisted_domains_only(make, plan: ServingPlan):
    recorder = Recorder()
    serving = plan.model_copy(update={"vllm": plan.vllm.model_copy(update={"allowed_media_domains": ["images.example.com"]})})
    middleware = make(recorder, serving=serving)

    def status(url: str) -> int:
        part = {"type": "image_url", "image_url": {"url": url}}
        return call(middleware, "POST", CHAT, json=image_message(part), headers=AUTH).status_code

    assert {url: status(url) for url in MEDIA_URLS} == MEDIA_URLS
    assert len(recorder.seen) == list(MEDIA_URLS.values()).count(200)
