"""ASGI middleware loaded into vLLM's API server with `--middleware`.

It runs inside the vLLM process, ahead of vLLM's own key check (vLLM adds `--middleware`
classes after its AuthenticationMiddleware, and the last added runs first), and gives the
server what vLLM lacks:
- the front door (docs/container.md, "Front door"): a path not on model_store.contract.front_door's
  allowlist is 404 to any caller but this container, the runtime LoRA routes answer only
  loopback callers (the adapter agent), and the API key is checked here, before a byte of
  the body is read; then the body is read within the plan's bounds
  (model_store.contract.request_limits: size, time, depth, names, sampling figures, media URLs);
- adapter names that survive a swap: a request for `name` is rewritten to the vLLM LoRA
  name of the version currently serving it (see routing.py), `/v1/models` shows public
  names, and requests are counted per served LoRA name so the agent unloads a version only
  once nothing uses it;
- `GET /llmfleet/adapters`: what this server serves;
- drain: once the entrypoint raised the flag, new requests get 503 with Retry-After and
  `/health` and `/ping` fail, while requests already inside finish;
- SageMaker: the `{"inputs", "parameters"}` payload on `/invocations`, and the adapter
  header resolved like a model name; without the header the body's `model` picks the adapter.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import os
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from llmfleet.containers.entrypoint.routing import RoutesWatcher, StateDir
from llmfleet.containers.entrypoint.sagemaker import PayloadError, completion_to_generated_text, is_tgi_payload, tgi_to_completion
from llmfleet.containers.entrypoint.settings import EnvironmentRefused
from llmfleet.model_store.contract.container import PLAN_ENV, STATE_DIR_ENV, TARGET_ENV, VLLM_API_KEY_ENV
from llmfleet.model_store.contract.targets import DEFAULT_TARGET
from llmfleet.model_store.contract.front_door import (
    Access,
    ADAPTERS_PATH,
    allowed,
    INVOCATIONS_PATH,
    is_admin_path,
    path_access,
)
from llmfleet.model_store.contract.plan import plan_from_json, ServingPlan
from llmfleet.model_store.contract.request_limits import (
    check_name,
    check_request,
    declared_length,
    parse_json,
    RequestLimits,
    RequestRefused,
    text_limits,
)

# Reachable during drain: the agent's and the metrics scraper's own view of the server.
DRAIN_EXEMPT_PATHS = frozenset({"/metrics", ADAPTERS_PATH})
SAGEMAKER_ADAPTER_HEADER = b"x-amzn-sagemaker-adapter-identifier"
# Long enough for a load balancer to mark the target draining and route elsewhere.
RETRY_AFTER_SECONDS = 5
# OpenAI's error `type` for each status the door answers.
ERROR_TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    403: "ForbiddenError",
    404: "NotFoundError",
    408: "RequestTimeoutError",
    413: "RequestTooLargeError",
    503: "ServiceUnavailable",
}
# WebSocket close code for a policy refusal (RFC 6455 7.4.1); before accept, servers answer 403.
POLICY_VIOLATION = 1008

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def is_loopback(scope: Scope) -> bool:
    client = scope.get("client")
    if not client:
        return False
    try:
        return ipaddress.ip_address(client[0]).is_loopback
    except ValueError:
        return False


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class ApiKey:
    """The server's API key, held as its sha256 and compared in constant time with the
    sha256 of the presented `Authorization: Bearer ...`, as vLLM's AuthenticationMiddleware
    does; no key (None or empty) lets every caller through, as vLLM does."""

    def __init__(self, key: str | None):
        self._digest = hashlib.sha256(key.encode("utf-8")).digest() if key else None

    def presented(self, scope: Scope) -> bool:
        if self._digest is None:
            return True
        value = _header(scope, b"authorization")
        if not value:
            return False
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return secrets.compare_digest(hashlib.sha256(token.encode("utf-8")).digest(), self._digest)


class FrontDoor:
    """Who may call which path of a server (model_store.contract.front_door), decided from the
    request line and headers alone."""

    def __init__(self, kind: str, target: str, api_key: str | None):
        self.kind, self.target, self.key = kind, target, ApiKey(api_key)
        path_access("/", kind=kind, target=target)  # an unknown kind or target fails here, at start

    def check(self, scope: Scope) -> None:
        """RequestRefused (404, 403 or 401) unless the caller may go on to the path."""
        path = scope["path"]
        access = path_access(path, kind=self.kind, target=self.target)
        if allowed(access, loopback=is_loopback(scope), has_key=self.key.presented(scope)):
            return
        if access is None:
            raise RequestRefused(404, None, f"{path} is not served here")
        if access is Access.LOOPBACK:
            raise RequestRefused(403, None, f"{path} is only served to localhost")
        raise RequestRefused(401, None, "missing or wrong API key (Authorization: Bearer ...)")


async def read_body(scope: Scope, receive: Receive, max_bytes: int, seconds: float) -> bytes | None:
    """The request body, read only while it stays within `max_bytes` (413, the rest unread) and
    arrives within `seconds` (408); None when the client disconnected while sending it."""
    declared_length(_header(scope, b"content-length"), max_bytes)
    chunks, size = [], 0
    try:
        async with asyncio.timeout(seconds):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > max_bytes:
                    raise RequestRefused(413, None, f"request body exceeds this server's limit of {max_bytes} bytes")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
    except TimeoutError:
        raise RequestRefused(408, None, f"request body not received within {seconds:g} s") from None


async def send_json(send: Send, status: int, payload: Any, extra_headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra_headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def error_body(message: str, kind: str, code: int) -> dict[str, Any]:
    """vLLM's own error shape, so clients parse ours like its."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


async def send_refusal(send: Send, refused: RequestRefused) -> None:
    body = error_body(str(refused), ERROR_TYPES.get(refused.status, "BadRequestError"), refused.status)
    body["error"]["param"] = refused.field
    await send_json(send, refused.status, body)


async def refuse_websocket(scope: Scope, door: FrontDoor, send: Send) -> bool:
    """Close a WebSocket the door refuses before it is accepted; whether it was refused."""
    try:
        door.check(scope)
    except RequestRefused:
        await send({"type": "websocket.close", "code": POLICY_VIOLATION})
        return True
    return False


class BehindFrontDoor:
    """An ASGI app behind the front door: the allowlist and the key, then the body read within
    `max_bytes` and `seconds`, before the app sees the request (the image server's face)."""

    def __init__(self, app: App, door: FrontDoor, max_bytes: int, seconds: float):
        self.app, self.door, self.max_bytes, self.seconds = app, door, max_bytes, seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and await refuse_websocket(scope, self.door, send):
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            self.door.check(scope)
            body = await read_body(scope, receive, self.max_bytes, self.seconds)
        except RequestRefused as refused:
            await send_refusal(send, refused)
            return
        if body is not None:  # None: the client left while sending
            await self.app(scope, _replay(body, receive), send)


def _replace_header(scope: Scope, name: bytes, value: str) -> Scope:
    headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != name]
    headers.append((name, value.encode("latin-1")))
    return {**scope, "headers": headers}


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
    """The middleware class vLLM instantiates with its app (`--middleware` dotted path).

    vLLM passes only the app: the state directory, API key, target and plan come from the
    environment the entrypoint gave its vLLM child; tests pass them as keywords (`limits`
    instead of a plan).
    """

    def __init__(
        self,
        app: App,
        state_dir: str | None = None,
        *,
        api_key: str | None = None,
        target: str | None = None,
        limits: RequestLimits | None = None,
        environ: Mapping[str, str] | None = None,
    ):
        environ = os.environ if environ is None else environ
        self.app = app
        self.state = StateDir(state_dir or environ[STATE_DIR_ENV])
        self.routes = RoutesWatcher(self.state)
        target = target or environ.get(TARGET_ENV, DEFAULT_TARGET)
        # Read once, as vLLM reads VLLM_API_KEY once.
        self.door = FrontDoor("text", target, api_key if api_key is not None else environ.get(VLLM_API_KEY_ENV))
        self.limits = limits or text_limits(_plan(environ))
        # Requests per served LoRA name (name@version of the route table); a name leaves at zero.
        self.in_flight: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and await refuse_websocket(scope, self.door, send):
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            self.door.check(scope)
        except RequestRefused as refused:
            await send_refusal(send, refused)
            return
        path, method = scope["path"], scope["method"]
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
        try:
            body = await read_body(scope, receive, self.limits.max_body_bytes, self.limits.body_seconds)
        except RequestRefused as refused:
            await send_refusal(send, refused)
            return
        if body is None:  # the client left while sending
            return
        if method == "POST" and not is_admin_path(path) and "json" in (_header(scope, b"content-type") or ""):
            await self._model_request(scope, body, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

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

    def _checked(self, path: str, body: bytes) -> tuple[Any, bool]:
        """The request's JSON (SageMaker's `inputs` payload translated; None when not JSON) within
        every bound of the plan, and whether it was translated; RequestRefused otherwise."""
        payload = parse_json(body, self.limits.max_json_depth)
        tgi = path == INVOCATIONS_PATH and is_tgi_payload(payload)
        if tgi:
            try:
                payload = tgi_to_completion(payload)
            except PayloadError as exc:
                raise RequestRefused(400, None, str(exc)) from None
        check_request(payload, self.limits)
        return payload, tgi

    async def _off_loop(self, size: int, work: Callable[..., Any], *args: Any) -> Any:
        """`work(*args)`, in a worker thread when it handles more than a small body, so one large
        request does not hold every other request and the health checks."""
        if size > self.limits.inline_parse_bytes:
            return await asyncio.to_thread(work, *args)
        return work(*args)

    async def _model_request(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> None:
        header = _header(scope, SAGEMAKER_ADAPTER_HEADER)
        try:
            check_name(header, SAGEMAKER_ADAPTER_HEADER.decode(), self.limits)
            payload, tgi = await self._off_loop(len(body), self._checked, scope["path"], body)
        except RequestRefused as refused:
            await send_refusal(send, refused)
            return
        # The routes are resolved and the request counted in one step (no await between),
        # so the agent never sees a version idle while a request is about to use it.
        table = self.routes.current()
        target = None
        if isinstance(payload, dict) and isinstance(payload.get("model"), str) and table:
            target = table.lora_name_for(payload["model"]) or payload["model"]
            payload = {**payload, "model": target}
        if header is not None and table:
            target = table.lora_name_for(header) or header
            scope = _replace_header(scope, SAGEMAKER_ADAPTER_HEADER, target)
        elif scope["path"] == INVOCATIONS_PATH and table and target and table.public_name_of(target):
            # boto3's invoke_endpoint cannot set the adapter header: the body's model names the
            # adapter, and vLLM's SageMaker handler sees it as if SageMaker had set the header.
            scope = _replace_header(scope, SAGEMAKER_ADAPTER_HEADER, target)
        # Only versions the route table serves are counted: any other name a client sends
        # (unknown, base, retired) would otherwise stay in memory for good.
        counted = target if table is not None and target is not None and table.public_name_of(target) else None
        if counted is not None:
            self.in_flight[counted] += 1
        try:
            if isinstance(payload, dict):
                body = await self._off_loop(len(body), _json_bytes, payload)
                scope = _replace_header(scope, b"content-length", str(len(body)))
            if tgi:
                capture = _ResponseCapture()
                await self.app(scope, _replay(body, receive), capture.send)
                await capture.replay(send, completion_to_generated_text)
            else:
                await self.app(scope, _replay(body, receive), send)
        finally:
            if counted is not None:
                self._release(counted)

    def _release(self, name: str) -> None:
        self.in_flight[name] -= 1
        if self.in_flight[name] <= 0:
            del self.in_flight[name]


def _json_bytes(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def _plan(environ: Mapping[str, str]) -> ServingPlan:
    """The text model's plan the entrypoint gave vLLM's child; the limits are derived from it."""
    text = environ.get(PLAN_ENV)
    if not text:
        raise EnvironmentRefused(f"{PLAN_ENV} is not set: the middleware derives every request bound from the plan")
    plan = plan_from_json(text)
    if not isinstance(plan, ServingPlan):
        raise EnvironmentRefused(f"{PLAN_ENV} holds a {plan.kind} plan; the vLLM middleware serves text models")
    return plan
