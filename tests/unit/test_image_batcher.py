"""The image server's batcher: same-shaped requests share a pipeline call up to max_batch images,
others wait their turn in order; a failing call fails its requests only; metrics count images."""

from __future__ import annotations

import threading

import pytest

from llmfleet.containers.image_server.app import PIPELINE_CALLS, Batcher
from llmfleet.containers.entrypoint.metrics import RUNNING, WAITING, parse_vllm_metrics
from llmfleet.containers.image_server.validation import ImageRequest


def request(prompt: str, n: int = 1, size: int = 64) -> ImageRequest:
    return ImageRequest(prompt, n, size, size, 2, 0.0, None)


class Pipeline:
    """Records each call's prompts; the first call waits until released, so a queue can build."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.release = threading.Event()

    def __call__(self, batch: list[ImageRequest]) -> list[list[str]]:
        self.release.wait(10)
        self.calls.append([r.prompt for r in batch])
        if any(r.prompt == "boom" for r in batch):
            raise RuntimeError("CUDA out of memory")
        return [[f"{r.prompt}-{j}" for j in range(r.n)] for r in batch]


def test_queued_requests_of_one_shape_share_a_call_up_to_max_batch():
    pipeline = Pipeline()
    batcher = Batcher(pipeline, max_batch=4, max_waiting=16)
    first = batcher.submit(request("first"))
    batcher.start()
    with batcher.changed:  # "first" is inside the pipeline before the others queue
        assert batcher.changed.wait_for(lambda: batcher.running == 1, 5)
    # While "first" runs, queue: two 64px (3 images), one 128px, one 64px that would overflow 4 images.
    queued = [batcher.submit(r) for r in (request("a", 2), request("big", 1, 128), request("b", 1), request("c", 2))]
    assert batcher.images_waiting >= 6
    pipeline.release.set()
    results = [f.result(10) for f in (first, *queued)]
    assert results[1] == ["a-0", "a-1"] and results[4] == ["c-0", "c-1"]
    assert pipeline.calls[1:] == [["a", "b"], ["big"], ["c"]]
    assert batcher.wait_idle(5)


def test_a_failed_call_fails_its_requests_and_the_next_call_runs():
    pipeline = Pipeline()
    pipeline.release.set()
    batcher = Batcher(pipeline, max_batch=1, max_waiting=4)
    batcher.start()
    failed, fine = batcher.submit(request("boom")), batcher.submit(request("fine"))
    with pytest.raises(RuntimeError, match="out of memory"):
        failed.result(10)
    assert fine.result(10) == ["fine-0"]


def test_metrics_text_is_what_the_publisher_reads():
    pipeline = Pipeline()
    batcher = Batcher(pipeline, max_batch=2, max_waiting=8)
    batcher.submit(request("a", 2))
    batcher.observe(3.0)
    snapshot = parse_vllm_metrics(batcher.metrics_text(), at=0.0)
    assert snapshot.values[WAITING] == 2 and snapshot.values[RUNNING] == 0 and snapshot.values[PIPELINE_CALLS] == 0
    assert snapshot.buckets["vllm:e2e_request_latency_seconds"][5.0] == 1
