"""Retries with backoff around store calls, and which adapter versions a server wants."""

from __future__ import annotations

import pytest
from botocore.exceptions import EndpointConnectionError

from containers.entrypoint.settings import EntrypointError
from containers.entrypoint.store_sync import desired_adapters, with_retries
from model_store.manifest import AdapterRef
from model_store.store import StoreError


class Flaky:
    def __init__(self, failures: list[Exception]):
        self.failures = failures
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "done"


def test_transient_failures_are_retried_with_doubling_delays():
    sleeps: list[float] = []
    call = Flaky([EndpointConnectionError(endpoint_url="http://s3"), StoreError("503 SlowDown")])

    assert with_retries(call, what="download", attempts=4, first_delay=1.0, sleep=sleeps.append) == "done"
    assert sleeps == [1.0, 2.0]


def test_a_store_that_stays_down_ends_in_one_clear_error():
    sleeps: list[float] = []
    call = Flaky([StoreError("connection refused")] * 5)

    with pytest.raises(EntrypointError, match="download of model 'm' failed after 3 attempts: connection refused"):
        with_retries(call, what="download of model 'm'", attempts=3, first_delay=0.5, sleep=sleeps.append)
    assert call.calls == 3
    assert sleeps == [0.5, 1.0]


def test_programming_errors_are_not_retried():
    call = Flaky([KeyError("bug")])

    with pytest.raises(KeyError):
        with_retries(call, what="x", sleep=lambda _: None)
    assert call.calls == 1


class PlanStub:
    def __init__(self, adapters: list[AdapterRef]):
        self.adapters = adapters


def test_registry_decides_unless_the_manifest_pins_a_version():
    plan = PlanStub([AdapterRef(name="medical", version="v1"), AdapterRef(name="legal")])

    assert desired_adapters(plan, {"medical": "v3", "legal": "v2", "finance": "v1"}) == {
        "medical": "v1",
        "legal": "v2",
        "finance": "v1",
    }


def test_a_pinned_adapter_is_served_before_any_promotion():
    assert desired_adapters(PlanStub([AdapterRef(name="medical", version="v1")]), {}) == {"medical": "v1"}
