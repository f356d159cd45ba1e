"""The adapter agent's decisions and swap order, with the store and vLLM replaced by fakes
that record what was asked of them."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from llmfleet.containers.entrypoint.agent import AdapterAgent, AdapterChange, adapter_changes
from llmfleet.containers.entrypoint.routing import RouteTable, StateDir
from llmfleet.containers.entrypoint.settings import EntrypointError
from llmfleet.containers.entrypoint.vllm_client import VllmRefused


def test_changes_load_swap_and_retire_by_name():
    changes = adapter_changes(
        serving={"medical": "v1", "legal": "v1", "old": "v3"},
        desired={"medical": "v2", "legal": "v1", "finance": "v1"},
        refused={},
    )

    assert changes == [
        AdapterChange("finance", None, "v1"),
        AdapterChange("medical", "v1", "v2"),
        AdapterChange("old", "v3", None),
    ]


def test_a_refused_version_is_not_retried_but_another_version_is():
    assert adapter_changes({"medical": "v1"}, {"medical": "v2"}, refused={"medical": "v2"}) == []
    assert adapter_changes({"medical": "v1"}, {"medical": "v3"}, refused={"medical": "v2"}) == [
        AdapterChange("medical", "v1", "v3")
    ]


def test_nothing_to_do_when_in_line():
    assert adapter_changes({"medical": "v1"}, {"medical": "v1"}, refused={}) == []


@dataclass
class FakeState:
    etag: str
    desired: dict[str, str]


@dataclass
class FakeGateway:
    states: list[FakeState | None]
    corrupt: set[tuple[str, str]] = field(default_factory=set)
    discarded: list[tuple[str, str]] = field(default_factory=list)
    polled_with: list[str | None] = field(default_factory=list)

    def poll(self, etag):
        self.polled_with.append(etag)
        return self.states.pop(0) if self.states else None

    def desired(self, state: FakeState) -> dict[str, str]:
        return state.desired

    def fetch_adapter(self, name: str, version: str) -> Path:
        if (name, version) in self.corrupt:
            raise EntrypointError(f"checksum mismatch for {name} {version}")
        return Path("/cache") / name / version

    def discard_adapter(self, name: str, version: str) -> None:
        self.discarded.append((name, version))


@dataclass
class FakeVllm:
    refuse: set[str] = field(default_factory=set)
    calls: list[tuple] = field(default_factory=list)
    routes_at_unload: list[dict] = field(default_factory=list)
    state: StateDir | None = None

    def load_adapter(self, lora_name: str, path: str) -> None:
        self.calls.append(("load", lora_name, path))
        if lora_name in self.refuse:
            raise VllmRefused(f"HTTP 400: rank too large for {lora_name}")

    def wait_idle(self, lora_name: str, timeout: float) -> bool:
        self.calls.append(("wait_idle", lora_name))
        return True

    def unload_adapter(self, lora_name: str) -> None:
        self.calls.append(("unload", lora_name))
        self.routes_at_unload.append(dict(self.state.read_routes().adapters))


def make_agent(tmp_path: Path, gateway: FakeGateway, vllm: FakeVllm, serving: dict[str, str]) -> tuple[AdapterAgent, StateDir]:
    state = StateDir(tmp_path)
    routes = RouteTable("base", "server-1", serving)
    state.write_routes(routes)
    vllm.state = state
    agent = AdapterAgent(
        gateway, vllm, state, routes, etag="e0", refused={}, interval=0.01, unload_wait=5, stop=threading.Event()
    )
    return agent, state


def test_swap_loads_new_switches_then_unloads_old(tmp_path: Path):
    gateway = FakeGateway([FakeState("e1", {"medical": "v2"})])
    vllm = FakeVllm()
    agent, state = make_agent(tmp_path, gateway, vllm, {"medical": "v1"})

    agent.check_once()

    assert vllm.calls == [
        ("load", "medical@v2", "/cache/medical/v2"),
        ("wait_idle", "medical@v1"),
        ("unload", "medical@v1"),
    ]
    assert vllm.routes_at_unload == [{"medical": "v2"}]  # switched before the old one went
    assert state.read_routes().adapters == agent.serving() == {"medical": "v2"}
    assert gateway.discarded == [("medical", "v1")]
    assert agent.etag == "e1"


def test_unchanged_registry_costs_one_conditional_poll(tmp_path: Path):
    gateway = FakeGateway([None])
    vllm = FakeVllm()
    agent, _ = make_agent(tmp_path, gateway, vllm, {"medical": "v1"})

    agent.check_once()

    assert gateway.polled_with == ["e0"]
    assert vllm.calls == []


def test_retired_adapter_is_unrouted_then_unloaded(tmp_path: Path):
    vllm = FakeVllm()
    agent, state = make_agent(tmp_path, FakeGateway([FakeState("e1", {})]), vllm, {"legal": "v1"})

    agent.check_once()

    assert vllm.calls == [("wait_idle", "legal@v1"), ("unload", "legal@v1")]
    assert vllm.routes_at_unload == [{}]
    assert state.read_routes().adapters == {}


@pytest.mark.parametrize("failure", ["corrupt", "refused"])
def test_a_version_that_fails_leaves_the_old_one_serving_until_the_registry_moves_on(tmp_path: Path, failure: str):
    gateway = FakeGateway([FakeState("e1", {"medical": "v2"}), FakeState("e2", {"medical": "v2", "legal": "v1"})])
    if failure == "corrupt":
        gateway.corrupt.add(("medical", "v2"))
    vllm = FakeVllm(refuse={"medical@v2"} if failure == "refused" else set())
    agent, state = make_agent(tmp_path, gateway, vllm, {"medical": "v1"})

    agent.check_once()
    agent.check_once()  # another change: medical v2 is not tried again

    assert state.read_routes().adapters == {"medical": "v1", "legal": "v1"}
    assert not any(call[0] == "unload" for call in vllm.calls)
    assert sum(call[:2] == ("load", "medical@v2") for call in vllm.calls) == (1 if failure == "refused" else 0)
    assert ("medical", "v2") in gateway.discarded
    assert agent.refused == {"medical": "v2"}


@pytest.mark.parametrize(
    "failure",
    [EntrypointError("registry poll failed after 4 attempts: connection refused"), OSError("connection refused")],
    ids=["store-outage", "unexpected"],
)
def test_a_failing_poll_is_logged_and_the_agent_keeps_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, failure: Exception
):
    class Unreachable(FakeGateway):
        def poll(self, etag):
            self.polled_with.append(etag)
            if len(self.polled_with) >= 3:
                agent.stop_event.set()
            raise failure

    gateway = Unreachable([])
    agent, _ = make_agent(tmp_path, gateway, FakeVllm(), {"medical": "v1"})

    agent.run()

    assert len(gateway.polled_with) == 3
    assert "connection refused" in caplog.text
    assert agent.serving() == {"medical": "v1"}
