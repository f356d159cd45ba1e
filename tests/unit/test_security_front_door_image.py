"""The image server's front door and its bounds, over ASGI with a stand-in pipeline: the key
before the body, the same allowlist as vLLM's servers, a capped body, a bounded queue (503 and
Retry-After), work withdrawn for a client that left, and 500s without exception text."""

from __future__ import annotations

import asyncio
import logging
import re
import threading

import httpx2
import pytest

from llmfleet.containers.image_server.app import Batcher, create_app
from llmfleet.containers.image_server.validation import MAX_BODY_BYTES, ImageRequest
from llmfleet.model_store.planning.fleet import load_and_plan
from llmfleet.model_store.contract.plan import ImagePlan
from tests.conftest import REPO

KEY = "sk-image-door"
AUTH = {"Authorization": f"Bearer {KEY}"}
REMOTE = ("10.0.3.7", 40000)
LOCAL = ("127.0.0.1", 40000)
IMAGES = "/v1/images/generations"

pytestmark = pytest.mark.timeout(60)


class Pipeline:
    """Records each call's prompts; holds every call until released; fails on 'boom'."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.release = threading.Event()

    def __call__(self, batch: list[ImageRequest]) -> list[list[str]]:
        self.release.wait(30)
        self.calls.append([r.prompt for r in batch])
        if any(r.prompt == "boom" for r in batch):
            raise RuntimeError("CUDA out of memory; weights at /opt/secret/pipeline")
        return [[f"{r.prompt}-{j}" for j in range(r.n)] for r in batch]


class CountedReceives:
    def __init__(self, app) -> None:
        self.app, self.receives = app, 0

    async def __call__(self, scope, receive, send) -> None:
        async def counted():
            self.receives += 1
            return await receive()

        await self.app(scope, counted, send)


@pytest.fixture(scope="module")
def plan() -> ImagePlan:
    return load_and_plan(REPO / "examples/image/fleet.yaml")[1][0]


@pytest.fixture
def pipeline() -> Pipeline:
    pipeline = Pipeline()
    yield pipeline
    pipeline.release.set()  # no pipeline thread outlives its test waiting


def server(plan: ImagePlan, pipeline: Pipeline, *, target: str = "ecs", max_waiting: int = 2) -> tuple[object, Batcher]:
    batcher = Batcher(pipeline, max_batch=1, max_waiting=max_waiting)
    batcher.start()
    return create_app(plan, batcher, KEY, threading.Event(), "images-1", target), batcher


def call(app, method: str, path: str, *, client=REMOTE, **kwargs) -> httpx2.Response:
    async def go() -> httpx2.Response:
        transport = httpx2.ASGITransport(app=app, client=client)
        async with httpx2.AsyncClient(transport=transport, base_url="http://server", timeout=30) as http:
            return await http.request(method, path, **kwargs)

    return asyncio.run(go())


def request(prompt: str) -> dict:
    return {"prompt": prompt, "size": "64x64"}


def test_an_unauthenticated_64_mib_body_is_refused_unread(plan: ImagePlan, pipeline: Pipeline):
    app, batcher = server(plan, pipeline)
    counted = CountedReceives(app)

    response = call(counted, "POST", IMAGES, content=b" " * (64 * 2**20), headers={"content-type": "application/json"})

    assert response.status_code == 401
    assert counted.receives == 0
    assert batcher.batches == 0


def test_an_authenticated_oversize_body_is_413_unread_and_deep_json_is_400(plan: ImagePlan, pipeline: Pipeline):
    app, batcher = server(plan, pipeline)
    counted = CountedReceives(app)
    deep = b"[" * 10_000 + b"]" * 10_000  # within the body cap, far past Python's recursion limit

    oversize = call(counted, "POST", IMAGES, content=b" " * (MAX_BODY_BYTES + 1), headers=AUTH)
    nested = call(app, "POST", IMAGES, content=deep, headers=AUTH)

    assert (oversize.status_code, counted.receives) == (413, 0)
    assert (nested.status_code, nested.json()["error"]["param"]) == (400, "body")
    assert batcher.batches == 0


def test_the_image_servers_allowlist_is_the_same_front_door(plan: ImagePlan, pipeline: Pipeline):
    pipeline.release.set()
    app, _ = server(plan, pipeline, target="ecs")
    on_sagemaker, _ = server(plan, pipeline, target="sagemaker")
    sagemaker_body = {"inputs": "a boat", "parameters": {"width": 64, "height": 64}}

    statuses = {
        "unknown path": call(app, "POST", "/v1/chat/completions", json={}, headers=AUTH).status_code,
        "invocations on ecs": call(app, "POST", "/invocations", json=sagemaker_body, headers=AUTH).status_code,
        "invocations on sagemaker": call(on_sagemaker, "POST", "/invocations", json=sagemaker_body).status_code,
        "metrics": call(app, "GET", "/metrics", headers=AUTH).status_code,
        "metrics from loopback": call(app, "GET", "/metrics", client=LOCAL).status_code,
        "adapters without key": call(app, "GET", "/llmfleet/adapters").status_code,
        "adapters with key": call(app, "GET", "/llmfleet/adapters", headers=AUTH).status_code,
        "models without key": call(app, "GET", "/v1/models").status_code,
        "health": call(app, "GET", "/health").status_code,
    }

    assert statuses == {
        "unknown path": 404,
        "invocations on ecs": 404,
        "invocations on sagemaker": 200,
        "metrics": 403,
        "metrics from loopback": 200,
        "adapters without key": 401,
        "adapters with key": 200,
        "models without key": 401,
        "health": 200,
    }


def test_a_full_queue_answers_503_with_retry_after_and_generates_nothing_for_it(plan: ImagePlan, pipeline: Pipeline):
    app, batcher = server(plan, pipeline, max_waiting=2)

    async def go() -> tuple[httpx2.Response, list[httpx2.Response]]:
        transport = httpx2.ASGITransport(app=app, client=REMOTE)
        async with httpx2.AsyncClient(transport=transport, base_url="http://server", timeout=30) as http:
            first = asyncio.create_task(http.post(IMAGES, json=request("first"), headers=AUTH))
            while batcher.running != 1:
                await asyncio.sleep(0.01)
            queued = [asyncio.create_task(http.post(IMAGES, json=request(p), headers=AUTH)) for p in ("a", "b")]
            while batcher.images_waiting != 2:
                await asyncio.sleep(0.01)
            refused = await http.post(IMAGES, json=request("refused"), headers=AUTH)
            pipeline.release.set()
            return refused, [await task for task in (first, *queued)]

    refused, served = asyncio.run(go())

    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "5"
    assert "2 images already wait" in refused.json()["error"]["message"]
    assert [response.status_code for response in served] == [200, 200, 200]
    assert pipeline.calls == [["first"], ["a"], ["b"]]


def test_a_client_that_left_before_its_batch_started_gets_no_images_made(plan: ImagePlan, pipeline: Pipeline):
    app, batcher = server(plan, pipeline)
    left = asyncio.Event()
    sent: list[dict] = []

    async def departing_client() -> None:
        body = b'{"prompt": "abandoned", "size": "64x64"}'
        scope = {"type": "http", "method": "POST", "path": IMAGES, "raw_path": IMAGES.encode(), "query_string": b"", "client": REMOTE,
                 "headers": [(b"authorization", f"Bearer {KEY}".encode()), (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}  # fmt: skip
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict:
            if messages:
                return messages.pop()
            await left.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        await app(scope, receive, send)

    async def go() -> httpx2.Response:
        transport = httpx2.ASGITransport(app=app, client=REMOTE)
        async with httpx2.AsyncClient(transport=transport, base_url="http://server", timeout=30) as http:
            first = asyncio.create_task(http.post(IMAGES, json=request("first"), headers=AUTH))
            while batcher.running != 1:
                await asyncio.sleep(0.01)
            departing = asyncio.create_task(departing_client())
            while batcher.images_waiting != 1:
                await asyncio.sleep(0.01)
            left.set()
            await departing
            assert batcher.images_waiting == 0
            pipeline.release.set()
            return await first

    first = asyncio.run(go())

    assert first.status_code == 200
    assert batcher.wait_idle(5)
    assert pipeline.calls == [["first"]]
    assert batcher.batches == 1


def test_a_failed_generation_is_a_500_with_a_request_id_and_no_exception_text(plan: ImagePlan, pipeline: Pipeline, caplog: pytest.LogCaptureFixture):
    pipeline.release.set()
    app, _ = server(plan, pipeline)

    with caplog.at_level(logging.ERROR, logger="llmfleet.image_server"):
        response = call(app, "POST", IMAGES, json=request("boom"), headers=AUTH)

    message = response.json()["error"]["message"]
    match = re.fullmatch(r"generation failed \(request id ([0-9a-f]{16})\)", message)
    assert response.status_code == 500 and match, message
    assert "CUDA" not in response.text and "secret" not in response.text and "RuntimeError" not in response.text
    (record,) = [r for r in caplog.records if match[1] in r.getMessage()]
    assert "CUDA out of memory" in str(record.exc_info[1])
