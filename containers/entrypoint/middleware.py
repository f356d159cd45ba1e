"""ASGI middleware loaded into vLLM's API server with `--middleware`.

It runs inside the vLLM process and gives the server what vLLM lacks:
- adapter names that survive a swap: a request for `name` is rewritten to the vLLM LoRA
  name of the version currently serving it (see routing.py), `/v1/models` shows public
  names, and requests are counted per LoRA name so the agent unloads a version only once
  nothing uses it;
- `GET /llmfleet/adapters`: what this server serves;
- the runtime LoRA routes answer only loopback callers (the adapter agent);
- drain: once the entrypoint raised the flag, new requests get 503 with Retry-After and
  `/health` and `/ping` fail, while requests already inside finish;
- SageMaker: the `{"inputs", "parameters"}` payload on `/invocations`, and the adapter
  header resolved like a model name; without the header the body's `model` picks the adapter.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from containers.entrypoint.routing import RoutesWatcher, StateDir
from containers.entrypoint.sagemaker import PayloadError, completion_to_generated_text, is_tgi_payload, tgi_to_completion
from model_store.container_contract import STATE_DIR_ENV

ADAPTERS_PATH = "/llmfleet/adapters"
HEALTH_PATHS = frozenset({"/health", "/ping"})
# Reachable during drain: the agent's and the metrics scraper's own view of the server.
DRAIN_EXEMPT_PATHS = frozenset({"/metrics", ADAPTERS_PATH})
# vLLM's runtime LoRA routes and SageMaker's adapter-management routes (vllm 0.32 route list).
ADMIN_PATHS = frozenset({"/v1/load_lora_adapter", "/v1/unload_lora_adapter", "/adapters"})
ADMIN_PREFIXES = ("/adapters/",)
SAGEMAKER_ADAPTER_HEADER = b"x-amzn-sagemaker-adapter-identifier"
# Long enough for a load balancer to mark the target draining and route elsewhere.
RETRY_AFTER_SECONDS = 5

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def is_loopback(scope: Scope) -> bool:
    client = scope.get("client")
    if not client:
        return False
    try:
        return ipaddress.ip_address(client[0]).is_loopback
    except ValueError:
        return False


def is_admin_path(path: str) -> bool:
    return path in ADMIN_PATHS or path.startswith(ADMIN_PREFIXES)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _replace_header(scope: Scope, name: bytes, value: str) -> Scope:
    headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != name]
    headers.append((name, value.encode("latin-1")))
    return {**scope, "headers": headers}


async def send_json(send: Send, status: int, payload: Any, extra_headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra_headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def error_body(message: str, kind: str, code: int) -> dict[str, Any]:
    """vLLM's own error shape, so clients parse ours like its."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The whole request body, and whether the client disconnected while sending it."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks), True
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), False


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands out `body` once, then the client's own messages (disconnects)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


class _ResponseCapture:
    """Collects a response so it can be rewritten before it reaches the client."""

    def __init__(self) -> None:
        self.start: Message | None = None
        self.chunks: list[bytes] = []

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.start = message
        elif message["type"] == "http.response.body":
            self.chunks.append(message.get("body", b""))

    async def replay(self, send: Send, transform: Callable[[Any], Any]) -> None:
        if self.start is None:  # the app answered nothing: neither do we, as if we were not here
            return
        body = b"".join(self.chunks)
        if self.start["status"] == 200:
            body = json.dumps(transform(json.loads(body))).encode()
        headers = [(k, v) for k, v in self.start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**self.start, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class LlmfleetMiddleware:
    """The middleware class vLLM instantiates with its app (`--middleware` dotted path)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], state_dir: str | None = None):
        self.app = app
        self.state = StateDir(state_dir or os.environ[STATE_DIR_ENV])
        self.routes = RoutesWatcher(self.state)
        self.in_flight: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        if is_admin_path(path) and not is_loopback(scope):
            await send_json(send, 403, error_body(f"{path} is only served to localhost", "ForbiddenError", 403))
            return
        if path == ADAPTERS_PATH and method == "GET":
            await send_json(send, 200, self.describe())
            return
        if path not in DRAIN_EXEMPT_PATHS and self.state.is_draining():
            retry = [(b"retry-after", str(RETRY_AFTER_SECONDS).encode())]
            await send_json(send, 503, error_body("server is draining; retry on another server", "ServiceUnavailable", 503), retry)
            return
        if path == "/v1/models" and method == "GET":
            capture = _ResponseCapture()
            await self.app(scope, receive, capture.send)
            await capture.replay(send, self._public_models)
            return
        if method == "POST" and not is_admin_path(path) and "json" in (_header(scope, b"content-type") or ""):
            await self._model_request(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def describe(self) -> dict[str, Any]:
        """`GET /llmfleet/adapters`: the contract's fields, plus drain, in-flight counts and the boot record."""
        table = self.routes.current()
        return {
            "model": table.model if table else None,
            "server_id": table.server_id if table else None,
            "adapters": dict(table.adapters) if table else {},
            "draining": self.state.is_draining(),
            "in_flight": {name: count for name, count in self.in_flight.items() if count},
            "boot": boot.model_dump() if (boot := self.state.read_boot()) else None,
        }

    def _public_models(self, listing: dict[str, Any]) -> dict[str, Any]:
        """Base models as they are; each served adapter version once, under its public name."""
        table = self.routes.current()
        shown = []
        for entry in listing.get("data", []):
            if entry.get("parent") is None:
                shown.append(entry)
                continue
            public = table.public_name_of(entry["id"]) if table else None
            if public is not None:
                shown.append({**entry, "id": public})
        return {**listing, "data": shown}

    async def _model_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        body, disconnected = await _read_body(receive)
        if disconnected:
            return
        try:
            payload = json.loads(body) if body else None
        except ValueError:  # malformed JSON: vLLM answers it with its own 400
            payload = None
        tgi = scope["path"] == "/invocations" and is_tgi_payload(payload)
        if tgi:
            try:
                payload = tgi_to_completion(payload)
            except PayloadError as exc:
                await send_json(send, 400, error_body(str(exc), "BadRequestError", 400))
                return
        # The routes are resolved and the request counted in one step (no await between),
        # so the agent never sees a version idle while a request is about to use it.
        table = self.routes.current()
        target = None
        if isinstance(payload, dict) and isinstance(payload.get("model"), str) and table:
            target = table.lora_name_for(payload["model"]) or payload["model"]
            payload = {**payload, "model": target}
        header = _header(scope, SAGEMAKER_ADAPTER_HEADER)
        if header is not None and table:
            target = table.lora_name_for(header) or header
            scope = _replace_header(scope, SAGEMAKER_ADAPTER_HEADER, target)
        elif scope["path"] == "/invocations" and table and target and table.public_name_of(target):
            # boto3's invoke_endpoint cannot set the adapter header: the body's model names the
            # adapter, and vLLM's SageMaker handler sees it as if SageMaker had set the header.
            scope = _replace_header(scope, SAGEMAKER_ADAPTER_HEADER, target)
        if isinstance(payload, dict):
            body = json.dumps(payload).encode()
            scope = _replace_header(scope, b"content-length", str(len(body)))
        if target is not None:
            self.in_flight[target] += 1
        try:
            if tgi:
                capture = _ResponseCapture()
                await self.app(scope, _replay(body, receive), capture.send)
                await capture.replay(send, completion_to_generated_text)
            else:
                await self.app(scope, _replay(body, receive), send)
        finally:
            if target is not None:
                self.in_flight[target] -= 1
