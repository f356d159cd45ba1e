"""The image server's HTTP face and its batcher.

- The front door (containers/entrypoint/middleware.py) comes first, as for vLLM: paths off
  model_store.contract.front_door's allowlist are 404, the API key is checked before any body byte is
  read, and the body is capped in size and time.
- `POST /v1/images/generations` (OpenAI images API, API key) and `POST /invocations` (SageMaker
  payload; on the SageMaker target only, reached through SageMaker's signed runtime API) are
  validated first (validation.py): a malformed request gets its 400 and never reaches the pipeline.
- `Batcher`: one worker thread owns the GPU; queued requests of one shape (size, steps,
  guidance) share a pipeline call up to the plan's `max_batch` images. The queue holds a few
  calls' worth (model_store.contract.request_limits.queue_images); beyond that a request gets 503 with
  Retry-After, and a request whose client left before its call started is withdrawn.
- A failed pipeline call is a 500 that says "generation failed" and a request id; the
  exception is logged under that id, never sent.
- Drain: once `draining` is set, new work and the health checks get 503 (Retry-After) while
  queued and running images finish (serve.py stops the server when the batcher is idle).
- `/metrics`: images waiting and running and request latency, under the names the entrypoint's
  metrics publisher reads (vLLM's), so one publisher, autoscaling and alarms serve both kinds.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Future

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from llmfleet.containers.entrypoint.metrics import E2E, RUNNING, WAITING
from llmfleet.containers.entrypoint.middleware import ADAPTERS_PATH, RETRY_AFTER_SECONDS, BehindFrontDoor, FrontDoor, error_body
from llmfleet.containers.image_server.validation import MAX_BODY_BYTES, ImageRequest, ImageRequestError, openai_request, sagemaker_request
from llmfleet.model_store.contract.front_door import INVOCATIONS_PATH
from llmfleet.model_store.errors import LlmfleetError
from llmfleet.model_store.contract.plan import ImagePlan
from llmfleet.model_store.contract.request_limits import body_seconds

IMAGES_PATH = "/v1/images/generations"
PIPELINE_CALLS = "llmfleet:image_pipeline_calls_total"
# Latency buckets for whole requests, in seconds: images take seconds to minutes, not milliseconds.
LATENCY_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)

# nginx's "client closed request": what the log shows for a request whose client left; no one receives it.
CLIENT_GONE = 499

Generate = Callable[[list[ImageRequest]], list[list[str]]]

log = logging.getLogger("llmfleet.image_server")


class QueueFull(LlmfleetError):
    """The batcher holds as many waiting images as it may; the message says how many."""


class Batcher(threading.Thread):
    """Runs `generate` over batches of queued requests of one shape, oldest first."""

    def __init__(self, generate: Generate, max_batch: int, max_waiting: int):
        super().__init__(name="pipeline", daemon=True)
        self.generate, self.max_batch, self.max_waiting = generate, max_batch, max_waiting
        self.changed = threading.Condition()
        self.queue: deque[tuple[ImageRequest, Future]] = deque()
        self.running = 0  # images in the pipeline call under way
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.batches = 0  # pipeline calls made: what a refused request must never add to

    def submit(self, request: ImageRequest) -> Future:
        """The future of `request`'s images; QueueFull when its images would not fit the queue."""
        future: Future = Future()
        with self.changed:
            waiting = sum(queued.n for queued, _ in self.queue)
            if waiting + request.n > self.max_waiting:
                raise QueueFull(f"{waiting} images already wait on this server (at most {self.max_waiting})")
            self.queue.append((request, future))
            self.changed.notify_all()
        return future

    def withdraw(self, future: Future) -> bool:
        """Take a request out of the queue before its pipeline call starts (its client left);
        False when it is no longer waiting."""
        with self.changed:
            for index, (_, queued) in enumerate(self.queue):
                if queued is future:
                    del self.queue[index]
                    future.cancel()
                    self.changed.notify_all()
                    return True
        return False

    @property
    def images_waiting(self) -> int:
        with self.changed:
            return sum(request.n for request, _ in self.queue)

    def wait_idle(self, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: not self.queue and self.running == 0, timeout)

    def _take(self) -> list[tuple[ImageRequest, Future]]:
        """The oldest request and the next ones of its shape that fit in `max_batch` images."""
        first = self.queue.popleft()
        batch, images, kept = [first], first[0].n, deque()
        while self.queue:
            item = self.queue.popleft()
            if item[0].shape == first[0].shape and images + item[0].n <= self.max_batch:
                batch.append(item)
                images += item[0].n
            else:
                kept.append(item)
        self.queue = kept
        return batch

    def observe(self, seconds: float) -> None:
        index = next((i for i, bound in enumerate(LATENCY_BUCKETS) if seconds <= bound), len(LATENCY_BUCKETS))
        self.latency_counts[index] += 1
        self.latency_sum += seconds

    def run(self) -> None:
        while True:
            with self.changed:
                self.changed.wait_for(lambda: bool(self.queue))
                batch = self._take()
                for _, future in batch:
                    future.set_running_or_notify_cancel()  # from here on, withdraw() leaves it be
                self.running = sum(request.n for request, _ in batch)
                self.batches += 1
                self.changed.notify_all()
            try:
                results = self.generate([request for request, _ in batch])
                for (_, future), images in zip(batch, results, strict=True):
                    future.set_result(images)
            except Exception as exc:  # the requests fail, the server goes on
                for _, future in batch:
                    future.set_exception(exc)
            with self.changed:
                self.running = 0
                self.changed.notify_all()

    def metrics_text(self) -> str:
        """Prometheus text of the figures the metrics publisher reads."""
        with self.changed:
            waiting, running = sum(r.n for r, _ in self.queue), self.running
            counts, total, batches = list(self.latency_counts), self.latency_sum, self.batches
        lines = [f"# TYPE {WAITING} gauge", f"{WAITING} {waiting}", f"# TYPE {RUNNING} gauge", f"{RUNNING} {running}"]
        lines += [f"# TYPE {PIPELINE_CALLS} counter", f"{PIPELINE_CALLS} {batches}"]
        lines.append(f"# TYPE {E2E} histogram")
        cumulative = 0
        for bound, count in zip([*map(str, LATENCY_BUCKETS), "+Inf"], counts, strict=True):
            cumulative += count
            lines.append(f'{E2E}_bucket{{le="{bound}"}} {cumulative}')
        lines += [f"{E2E}_sum {total}", f"{E2E}_count {cumulative}"]
        return "\n".join(lines) + "\n"


def _error(status: int, message: str, kind: str, param: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body = error_body(message, kind, status)
    body["error"]["param"] = param
    return JSONResponse(body, status_code=status, headers=headers)


async def _disconnected(receive: Callable[[], Awaitable[dict]]) -> None:
    """Returns once the client has gone (the body was read already: nothing else arrives)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def create_app(
    plan: ImagePlan, batcher: Batcher, api_key: str | None, draining: threading.Event, server_id: str, target: str
) -> BehindFrontDoor:
    """The server's routes behind the front door; `api_key` (None: no key) guards the client
    paths as vLLM's does, and `target` decides whether `/invocations` is served."""
    settings = plan.image
    retry = {"retry-after": str(RETRY_AFTER_SECONDS)}

    def refused() -> JSONResponse | None:
        if draining.is_set():
            return _error(503, "server is draining; retry on another server", "ServiceUnavailable", headers=retry)
        return None

    async def generate(request: Request, parse: Callable[[bytes], ImageRequest]) -> JSONResponse | list[str]:
        """The request's images (base64 PNGs), or the error response that refused it."""
        early = refused()
        if early is not None:
            return early
        try:
            image_request = parse(await request.body())
        except ImageRequestError as exc:
            return _error(400, str(exc), "BadRequestError", exc.field)
        started = time.monotonic()
        try:
            future = batcher.submit(image_request)
        except QueueFull as exc:
            return _error(503, f"{exc}; retry later or on another server", "ServiceUnavailable", headers=retry)
        result, gone = asyncio.wrap_future(future), asyncio.ensure_future(_disconnected(request.receive))
        try:
            await asyncio.wait({result, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not result.done():  # the client left (or the server stops) first
                batcher.withdraw(future)
                result.add_done_callback(lambda done: done.cancelled() or done.exception())  # its outcome is nobody's
        if not result.done():
            return _error(CLIENT_GONE, "client disconnected before its images were made", "ClientClosedRequest")
        try:
            images = result.result()
        except Exception:  # noqa: BLE001 - the pipeline failed: a 500 for this request only
            request_id = uuid.uuid4().hex[:16]
            log.exception("request %s: generation failed", request_id)
            return _error(500, f"generation failed (request id {request_id})", "InternalServerError")
        batcher.observe(time.monotonic() - started)
        return images

    async def images(request: Request) -> JSONResponse:
        result = await generate(request, lambda body: openai_request(body, settings, plan.model_name))
        if isinstance(result, JSONResponse):
            return result
        return JSONResponse({"created": int(time.time()), "data": [{"b64_json": image} for image in result]})

    async def invocations(request: Request) -> JSONResponse:
        result = await generate(request, lambda body: sagemaker_request(body, settings))
        if isinstance(result, JSONResponse):
            return result
        return JSONResponse({"images": result})

    async def models(request: Request) -> JSONResponse:
        early = refused()
        if early is not None:
            return early
        entry = {"id": plan.model_name, "object": "model", "created": 0, "owned_by": "llmfleet", "kind": "image"}
        return JSONResponse({"object": "list", "data": [entry]})

    async def health(request: Request) -> JSONResponse:
        if draining.is_set():
            return _error(503, "server is draining", "ServiceUnavailable")
        return JSONResponse({"status": "ok", "images_waiting": batcher.images_waiting})

    async def adapters(request: Request) -> JSONResponse:
        """The LLM middleware's self-description, which `llmfleet status` reads: no adapters here."""
        return JSONResponse({"model": plan.model_name, "server_id": server_id, "adapters": {}, "draining": draining.is_set(), "in_flight": {}})

    async def metrics(request: Request) -> PlainTextResponse:
        return PlainTextResponse(batcher.metrics_text())

    routes = Starlette(
        routes=[
            Route(IMAGES_PATH, images, methods=["POST"]),
            Route(INVOCATIONS_PATH, invocations, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/ping", health, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route(ADAPTERS_PATH, adapters, methods=["GET"]),
        ]
    )
    return BehindFrontDoor(routes, FrontDoor("image", target, api_key), MAX_BODY_BYTES, body_seconds(MAX_BODY_BYTES))
