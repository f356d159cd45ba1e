"""The middleware inside vLLM, driven over ASGI with a stand-in for vLLM's app that echoes
what reached it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx2
import pytest

from llmfleet.containers.entrypoint.middleware import RETRY_AFTER_SECONDS, LlmfleetMiddleware
from llmfleet.containers.entrypoint.routing import RouteTable, StateDir
from llmfleet.model_store.contract.request_limits import RequestLimits

LIMITS = RequestLimits(max_body_bytes=2**20, body_seconds=5, max_n=4, max_tokens=512)
LOCAL = ("127.0.0.1", 40000)
REMOTE = ("10.0.3.7", 40000)
HEADER = "X-Amzn-SageMaker-Adapter-Identifier"


class EchoApp:
    """Answers like vLLM would, recording the model and headers each request arrived with."""

    def __init__(self) -> None:
        self.seen: list[dict] = []

    async def __call__(self, scope, receive, send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        try:
            payload = json.loads(body) if body else None
        except ValueError:
            payload = None
        self.seen.append({"path": scope["path"], "payload": payload, "body": body, "headers": headers})
        if scope["path"] == "/v1/models":
            answer = {
                "object": "list",
                "data": [
                    {"id": "base", "parent": None},
                    {"id": "medical@v2", "parent": "base"},
                    {"id": "medical@v1", "parent": "base"},  # retired, not yet unloaded
                    {"id": "legal@v1", "parent": "base"},
                ],
            }
        elif scope["path"] == "/invocations" and payload and "prompt" in payload:
            answer = {"choices": [{"index": 1, "text": " second"}, {"index": 0, "text": " first"}]}
        else:
            answer = {"ok": True}
        data = json.dumps(answer).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": data})


@pytest.fixture
def state(tmp_path: Path) -> StateDir:
    state = StateDir(tmp_path)
    state.write_routes(RouteTable("base", "server-1", {"medical": "v2", "legal": "v1"}))
    return state


@pytest.fixture
def app() -> EchoApp:
    return EchoApp()


def middleware_for(app, state: StateDir) -> LlmfleetMiddleware:
    """A SageMaker server's middleware without an API key."""
    return LlmfleetMiddleware(app, state_dir=str(state.path), target="sagemaker", limits=LIMITS, environ={})


def call(app: EchoApp, state: StateDir, method: str, path: str, *, client=LOCAL, **kwargs) -> httpx2.Response:
    middleware = middleware_for(app, state)

    async def go() -> httpx2.Response:
        transport = httpx2.ASGITransport(app=middleware, client=client)
        async with httpx2.AsyncClient(transport=transport, base_url="http://server") as http:
            return await http.request(method, path, **kwargs)

    return asyncio.run(go())


def test_public_adapter_name_reaches_vllm_as_the_current_version(app: EchoApp, state: StateDir):
    response = call(app, state, "POST", "/v1/chat/completions", json={"model": "medical", "messages": []})

    assert response.status_code == 200
    assert app.seen[-1]["payload"]["model"] == "medical@v2"
    assert app.seen[-1]["headers"]["content-length"] == str(len(json.dumps(app.seen[-1]["payload"])))


def test_switching_routes_redirects_the_next_request(app: EchoApp, state: StateDir):
    state.write_routes(RouteTable("base", "server-1", {"medical": "v3"}))

    call(app, state, "POST", "/v1/completions", json={"model": "medical", "prompt": "x"})

    assert app.seen[-1]["payload"]["model"] == "medical@v3"


@pytest.mark.parametrize("model", ["base", "unknown-adapter", "medical@v1"])
def test_other_model_names_pass_unchanged(app: EchoApp, state: StateDir, model: str):
    call(app, state, "POST", "/v1/completions", json={"model": model, "prompt": "x"})

    assert app.seen[-1]["payload"]["model"] == model


@pytest.mark.parametrize("content_type", ["application/json", "multipart/form-data; boundary=x"])
def test_bodies_that_are_not_json_objects_pass_unchanged(app: EchoApp, state: StateDir, content_type: str):
    response = call(app, state, "POST", "/tokenize", content=b"{not json", headers={"content-type": content_type})

    assert response.status_code == 200
    assert app.seen[-1]["body"] == b"{not json"


def test_models_listing_shows_public_names_of_served_versions_only(app: EchoApp, state: StateDir):
    listing = call(app, state, "GET", "/v1/models").json()

    assert [entry["id"] for entry in listing["data"]] == ["base", "medical", "legal"]


def test_llmfleet_adapters_describes_the_server(app: EchoApp, state: StateDir):
    described = call(app, state, "GET", "/llmfleet/adapters").json()

    assert described["model"] == "base"
    assert described["server_id"] == "server-1"
    assert described["adapters"] == {"medical": "v2", "legal": "v1"}
    assert described["draining"] is False
    assert app.seen == []


@pytest.mark.parametrize("path", ["/v1/load_lora_adapter", "/v1/unload_lora_adapter", "/adapters", "/adapters/medical"])
def test_runtime_lora_routes_refuse_remote_callers(app: EchoApp, state: StateDir, path: str):
    response = call(app, state, "POST", path, client=REMOTE, json={"lora_name": "x", "lora_path": "/cache/x"})

    assert response.status_code == 403
    assert "localhost" in response.json()["error"]["message"]
    assert app.seen == []


def test_runtime_lora_routes_serve_localhost_untouched(app: EchoApp, state: StateDir):
    body = {"lora_name": "medical@v3", "lora_path": "/cache/medical/v3"}

    response = call(app, state, "POST", "/v1/load_lora_adapter", json=body)

    assert response.status_code == 200
    assert app.seen[-1]["payload"] == body


def test_remote_callers_still_reach_the_api(app: EchoApp, state: StateDir):
    response = call(app, state, "POST", "/v1/completions", client=REMOTE, json={"model": "legal", "prompt": "x"})

    assert response.status_code == 200
    assert app.seen[-1]["payload"]["model"] == "legal@v1"


@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/completions"), ("GET", "/health"), ("GET", "/ping"), ("POST", "/invocations")])
def test_draining_turns_new_requests_away(app: EchoApp, state: StateDir, method: str, path: str):
    state.start_draining()

    response = call(app, state, method, path, json={"model": "base", "prompt": "x"} if method == "POST" else None)

    assert response.status_code == 503
    assert response.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
    assert app.seen == []


@pytest.mark.parametrize("path", ["/metrics", "/llmfleet/adapters"])
def test_draining_keeps_the_servers_own_views(app: EchoApp, state: StateDir, path: str):
    state.start_draining()

    assert call(app, state, "GET", path).status_code == 200


def test_sagemaker_adapter_header_resolves_like_a_model_name(app: EchoApp, state: StateDir):
    body = {"messages": [{"role": "user", "content": "hi"}]}

    call(app, state, "POST", "/invocations", json=body, headers={HEADER: "medical"})

    assert app.seen[-1]["headers"][HEADER.lower()] == "medical@v2"
    assert app.seen[-1]["payload"] == body


def test_inputs_parameters_payload_becomes_a_completion_and_the_answer_generated_text(app: EchoApp, state: StateDir):
    body = {"inputs": ["a", "b"], "parameters": {"max_new_tokens": 5, "do_sample": False}}

    response = call(app, state, "POST", "/invocations", json=body, headers={HEADER: "legal"})

    assert app.seen[-1]["payload"] == {"prompt": ["a", "b"], "max_tokens": 5, "temperature": 0.0}
    assert app.seen[-1]["headers"][HEADER.lower()] == "legal@v1"
    assert response.json() == [{"generated_text": " first"}, {"generated_text": " second"}]
    assert response.headers["content-length"] == str(len(response.content))


def test_inputs_payload_with_an_unknown_parameter_is_a_400(app: EchoApp, state: StateDir):
    response = call(app, state, "POST", "/invocations", json={"inputs": "a", "parameters": {"watermark": True}})

    assert response.status_code == 400
    assert "watermark" in response.json()["error"]["message"]
    assert app.seen == []


def test_inputs_payload_is_only_translated_on_invocations(app: EchoApp, state: StateDir):
    call(app, state, "POST", "/v1/completions", json={"inputs": "a"})

    assert app.seen[-1]["payload"] == {"inputs": "a"}


def test_requests_are_counted_per_lora_name_while_in_flight(state: StateDir):
    release = asyncio.Event()
    counts: list[dict] = []

    async def slow_app(scope, receive, send) -> None:
        await receive()
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    middleware = middleware_for(slow_app, state)

    async def go() -> None:
        transport = httpx2.ASGITransport(app=middleware, client=LOCAL)
        async with httpx2.AsyncClient(transport=transport, base_url="http://server") as http:
            request = asyncio.create_task(http.post("/v1/completions", json={"model": "medical", "prompt": "x"}))
            while not middleware.in_flight["medical@v2"]:
                await asyncio.sleep(0)
            counts.append(dict(middleware.describe()["in_flight"]))
            release.set()
            await request
            counts.append(dict(middleware.describe()["in_flight"]))

    asyncio.run(go())

    assert counts == [{"medical@v2": 1}, {}]


@pytest.mark.parametrize(
    "body",
    [
        {"model": "medical", "messages": [{"role": "user", "content": "hi"}]},
        {"model": "medical", "inputs": "hi", "parameters": {"max_new_tokens": 2}},
    ],
)
def test_invocations_without_the_header_take_the_adapter_from_the_body(app: EchoApp, state: StateDir, body: dict):
    """boto3's invoke_endpoint cannot set the adapter header."""
    call(app, state, "POST", "/invocations", json=body)

    assert app.seen[-1]["payload"]["model"] == "medical@v2"
    assert app.seen[-1]["headers"][HEADER.lower()] == "medical@v2"


@pytest.mark.parametrize(("path", "model"), [("/invocations", "base"), ("/invocations", "unknown"), ("/v1/completions", "medical")])
def test_the_adapter_header_is_only_added_for_a_served_adapter_on_invocations(app: EchoApp, state: StateDir, path: str, model: str):
    call(app, state, "POST", path, json={"model": model, "prompt": "hi"})

    assert HEADER.lower() not in app.seen[-1]["headers"]


def test_a_listing_the_app_never_answered_is_not_answered_either(state: StateDir):
    """The ASGI server then answers the client as it would without the middleware."""

    async def silent_app(scope, receive, send) -> None:
        await receive()

    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/v1/models", "headers": [], "client": LOCAL}
    asyncio.run(middleware_for(silent_app, state)(scope, receive, send))

    assert sent == []
