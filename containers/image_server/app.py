"""The image server's HTTP face and its batcher.

- `POST /v1/images/generations` (OpenAI images API, API key) and `POST /invocations` (SageMaker
  payload; reached only through SageMaker's signed runtime API, like vLLM's) are validated
  first (validation.py): a malformed request gets its 400 and never reaches the pipeline.
- `Batcher`: one worker thread owns the GPU; queued requests of one shape (size, steps,
  guidance) share a pipeline call up to the plan's `max_batch` images.
- Drain: once `draining` is set, new work and the health checks get 503 (Retry-After) while
  queued and running images finish (serve.py stops the server when the batcher is idle).
- `/metrics`: images waiting and running and request latency, under the names the entrypoint's
  metrics publisher reads (vLLM's), so one publisher, autoscaling and alarms serve both kinds.
"""

from __future__ import annotations

import asyncio
import hmac
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from containers.entrypoint.metrics import E2E, RUNNING, WAITING
from containers.entrypoint.middleware import ADAPTERS_PATH, RETRY_AFTER_SECONDS, error_body
from containers.image_server.validation import ImageRequest, ImageRequestError, openai_request, sagemaker_request
from model_store.image_plan import ImagePlan

IMAGES_PATH = "/v1/images/generations"
PIPELINE_CALLS = "llmfleet:image_pipeline_calls_total"
# Latency buckets for whole requests, in seconds: images take seconds to minutes, not milliseconds.
LATENCY_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)

Generate = Callable[[list[ImageRequest]], list[list[str]]]


class Batcher(threading.Thread):
    """Runs `generate` over batches of queued requests of one shape, oldest first."""

    def __init__(self, generate: Generate, max_batch: int):
        super().__init__(name="pipeline", daemon=True)
        self.generate, self.max_batch = generate, max_batch
        self.changed = threading.Condition()
        self.queue: deque[tuple[ImageRequest, Future]] = deque()
        self.running = 0  # images in the pipeline call under way
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.batches = 0  # pipeline calls made: what a refused request must never add to

    def submit(self, request: ImageRequest) -> Future:
        future: Future = Future()
        with self.changed:
            self.queue.append((request, future))
            self.changed.notify_all()
        return future

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


def create_app(plan: ImagePlan, batcher: Batcher, api_key: str | None, draining: threading.Event, server_id: str) -> Starlette:
    """The server's routes; `api_key` (None: no key) guards the /v1 routes as vLLM's does."""
    settings = plan.image

    def refused(request: Request, guarded: bool) -> JSONResponse | None:
        if guarded and api_key is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return _error(401, "missing or wrong API key (Authorization: Bearer ...)", "AuthenticationError")
        if draining.is_set():
            retry = {"retry-after": str(RETRY_AFTER_SECONDS)}
            return _error(503, "server is draining; retry on another server", "ServiceUnavailable", headers=retry)
        return None

    async def generate(request: Request, parse: Callable[[bytes], ImageRequest], guarded: bool) -> JSONResponse | list[str]:
        """The request's images (base64 PNGs), or the error response that refused it."""
        early = refused(request, guarded)
        if early is not None:
            return early
        try:
            image_request = parse(await request.body())
        except ImageRequestError as exc:
            return _error(400, str(exc), "BadRequestError", exc.field)
        started = time.monotonic()
        try:
            images = await asyncio.wrap_future(batcher.submit(image_request))
        except Exception as exc:  # noqa: BLE001 - the pipeline failed: a 500 for this request only
            return _error(500, f"generation failed: {type(exc).__name__}: {exc}", "InternalServerError")
        batcher.observe(time.monotonic() - started)
        return images

    async def images(request: Request) -> JSONResponse:
        result = await generate(request, lambda body: openai_request(body, settings, plan.model_name), guarded=True)
        if isinstance(result, JSONResponse):
            return result
        return JSONResponse({"created": int(time.time()), "data": [{"b64_json": image} for image in result]})

    async def invocations(request: Request) -> JSONResponse:
        result = await generate(request, lambda body: sagemaker_request(body, settings), guarded=False)
        if isinstance(result, JSONResponse):
            return result
        return JSONResponse({"images": result})

    async def models(request: Request) -> JSONResponse:
        early = refused(request, guarded=True)
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

    return Starlette(
        routes=[
            Route(IMAGES_PATH, images, methods=["POST"]),
            Route("/invocations", invocations, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/ping", health, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route(ADAPTERS_PATH, adapters, methods=["GET"]),
        ]
    )
