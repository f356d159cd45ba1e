"""The container's life at its edges: boot failures, vLLM dying, SIGTERM drain.

The servers ended here are this file's own: it runs alone or in any order with the others.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
from collections.abc import Iterator

import httpx2
import psutil
import pytest

from llmfleet.model_store.contract.container import EXIT_STORE
from llmfleet.model_store.errors import EXIT_BAD_INPUT
from llmfleet.model_store.store.registry import adapters_for_server
from llmfleet.scripts.standin_model import entrypoint_environment
from tests.conftest import free_port
from tests.e2e.conftest import (
    MODEL,
    STAGE,
    Fleet,
    Server,
    aws_credentials,
    boot_server,
    living,
    processes_in_group,
    start_entrypoint,
    wait_until,
)

pytestmark = pytest.mark.timeout(600)
API_KEY = "e2e-api-key"


def _run_to_exit(fleet: Fleet, name: str, endpoint: str, **overrides: str) -> tuple[int, str]:
    env = entrypoint_environment(
        fleet.plan,
        store_uri=fleet.store_uri,
        endpoint_url=endpoint,
        model_root=fleet.work / f"{name}-cache",
        port=free_port(),
        base=aws_credentials(endpoint),
    )
    env.update(overrides)
    log = fleet.work / f"{name}.log"
    process = start_entrypoint(env, log)
    return process.wait(timeout=120), log.read_text()


def test_store_unreachable_at_boot_exits_with_clear_message(fleet: Fleet):
    with socket.socket() as refusing:  # bound, never listening: every connection is refused
        refusing.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{refusing.getsockname()[1]}"

        code, output = _run_to_exit(fleet, "unreachable", closed)

    assert code == EXIT_STORE
    assert "registry read (store " in output and "failed: Could not connect" in output
    assert fleet.store_uri in output
    assert "starting vLLM" not in output


def test_invalid_plan_exits_before_touching_the_store(fleet: Fleet):
    code, output = _run_to_exit(fleet, "bad-plan", fleet.endpoint, LLMFLEET_PLAN=json.dumps({"model_name": MODEL}))

    assert code == EXIT_BAD_INPUT
    assert "LLMFLEET_PLAN is not a valid ServingPlan" in output


@pytest.fixture(scope="module")
def late_server(fleet: Fleet) -> Iterator[Server]:
    """A second server, booted while the registry names a corrupt version of `legal` and a
    version of `finance` whose rank the plan does not allow; it requires an API key."""
    fleet.promote_bad_versions()
    server = boot_server(fleet, "server-b", VLLM_API_KEY=API_KEY)
    yield server
    server.stop()


def test_boot_leaves_out_bad_adapter_versions_and_serves_the_rest(late_server: Server, fleet: Fleet):
    output = late_server.output()

    assert "adapter legal version v2 left out" in output and "checksum mismatch" in output
    assert (
        "adapter finance version v2 left out: adapter 'finance' version 'v2' refused on this server: "
        "adapter rejected [rank]: r = 32 exceeds the model's lora.max_rank 16"
    ) in output
    wanted = adapters_for_server(fleet.registry.state(MODEL, STAGE), "server-b")
    with late_server.client() as http:
        served = http.get("/llmfleet/adapters").json()["adapters"]
        ok = http.post(
            "/v1/completions",
            json={"model": "medical", "prompt": "Hi", "max_tokens": 2},
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
    assert served == {name: version for name, version in wanted.items() if name not in ("legal", "finance")}
    assert "medical" in served
    assert ok.status_code == 200


def test_api_key_guards_the_api_while_the_agent_still_swaps(late_server: Server, fleet: Fleet):
    fleet.publish("cardio", "v2", seed=44)
    fleet.promote("cardio", "v2")

    with late_server.client() as http:
        wait_until(lambda: http.get("/llmfleet/adapters").json()["adapters"].get("cardio") == "v2", "cardio v2 on server-b")
        body = {"model": "cardio", "prompt": "Hi", "max_tokens": 2}
        anonymous = http.post("/v1/completions", json=body)
        keyed = http.post("/v1/completions", json=body, headers={"Authorization": f"Bearer {API_KEY}"})

    assert anonymous.status_code == 401
    assert keyed.status_code == 200
    assert f"Bearer {API_KEY}" not in late_server.output() and API_KEY not in late_server.output()


def test_vllm_killed_makes_the_container_exit_non_zero_and_leaves_nothing(late_server: Server):
    """Last user of `late_server`: it ends it."""
    group = late_server.vllm_group()
    (api_server,) = psutil.Process(late_server.process.pid).children()
    assert len(processes_in_group(group)) >= 2, "vLLM's API server and its EngineCore run in vLLM's group"
    assert late_server.state_dirs(), "the running entrypoint has its state directory"

    api_server.send_signal(signal.SIGKILL)
    code = late_server.process.wait(timeout=60)

    assert code == 128 + signal.SIGKILL
    assert "vLLM exited with -9" in late_server.output()
    assert processes_in_group(group) == [], "EngineCore or workers outlived the container"
    assert late_server.state_dirs() == []


@pytest.fixture
def draining_server(fleet: Fleet) -> Iterator[Server]:
    """A server of its own for the drain test, which ends it."""
    server = boot_server(fleet, "server-c")
    yield server
    server.stop()


def test_sigterm_drains_streams_finish_and_new_requests_get_503(draining_server: Server):
    server = draining_server
    chunks: list[str] = []
    first_chunk = threading.Event()

    def stream() -> None:
        body = {"model": "medical", "prompt": "Tell me a story", "max_tokens": 300, "ignore_eos": True, "stream": True,
                "stream_options": {"include_usage": True}}
        with httpx2.Client(base_url=server.url, timeout=120) as http, http.stream("POST", "/v1/completions", json=body) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    chunks.append(line.removeprefix("data: "))
                    first_chunk.set()

    reader = threading.Thread(target=stream)
    reader.start()
    assert first_chunk.wait(timeout=60)
    family = server.family()
    server.process.send_signal(signal.SIGTERM)
    streamed_at_signal = len(chunks)
    with server.client(timeout=30) as http:
        wait_until(lambda: http.get("/llmfleet/adapters").json()["draining"], "the entrypoint raised the drain flag")
        refused = http.post("/v1/completions", json={"model": MODEL, "prompt": "Hi", "max_tokens": 2})
        health = http.get("/health")
        ping = http.get("/ping")
    reader.join(timeout=120)
    code = server.process.wait(timeout=120)

    assert streamed_at_signal < 300, "the stream was still running when SIGTERM arrived"
    assert refused.status_code == 503
    assert refused.headers["retry-after"].isdigit()
    assert (health.status_code, ping.status_code) == (503, 503)
    assert chunks[-1] == "[DONE]"
    events = [json.loads(chunk) for chunk in chunks[:-1]]
    finishes = [choice["finish_reason"] for event in events for choice in event["choices"] if choice["finish_reason"]]
    assert finishes == ["length"]
    assert events[-1]["usage"]["completion_tokens"] == 300
    assert code == 0
    assert living(family) == [] and server.state_dirs() == []
