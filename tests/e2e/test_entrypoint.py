"""The serving container end to end: real entrypoint, real CPU vLLM, moto's S3 server.

The tests share one server and run in file order: promotions build on each other.
"""

from __future__ import annotations

import json
import time

import httpx2
import pytest

from llmfleet.model_store.contract import telemetry
from llmfleet.model_store.store.registry import rollout_position
from tests.e2e.conftest import ACTOR, MODEL, STAGE, Fleet, Server, client_from_outside, wait_until

pytestmark = pytest.mark.timeout(600)
HEADER = "X-Amzn-SageMaker-Adapter-Identifier"


def chat(server: Server, model: str, prompt: str = "Hello, how are you today?") -> httpx2.Response:
    with server.client() as http:
        return http.post(
            "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 8, "temperature": 0},
        )


def answer(server: Server, model: str) -> str:
    response = chat(server, model)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


def completion_text(server: Server, model: str, prompt: str = "Tell me a story") -> str:
    with server.client() as http:
        response = http.post("/v1/completions", json={"model": model, "prompt": prompt, "max_tokens": 8, "temperature": 0})
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["text"]


def served(server: Server) -> dict:
    with server.client() as http:
        return http.get("/llmfleet/adapters").json()


def test_base_model_and_two_adapters_answer_by_name(server: Server):
    answers = {model: answer(server, model) for model in (MODEL, "medical", "legal")}

    assert len(set(answers.values())) == 3, f"adapters should change the output: {answers}"


def test_models_lists_public_names_only(server: Server):
    with server.client() as http:
        listing = http.get("/v1/models").json()

    assert sorted(entry["id"] for entry in listing["data"]) == sorted([MODEL, "medical", "legal"])


def test_llmfleet_adapters_reports_what_is_loaded(server: Server):
    state = served(server)

    assert state["model"] == MODEL
    assert state["server_id"] == "server-a"
    assert state["adapters"] == {"medical": "v1", "legal": "v1"}


def test_unknown_model_gets_vllm_error(server: Server):
    response = chat(server, "no-such-adapter")

    assert response.status_code == 404
    assert "no-such-adapter" in response.json()["error"]["message"]
    assert "does not exist" in response.json()["error"]["message"]


def test_invocations_openai_body_with_adapter_header(server: Server):
    body = {"messages": [{"role": "user", "content": "Hello, how are you today?"}], "max_tokens": 8, "temperature": 0}
    with server.client() as http:
        response = http.post("/invocations", json=body, headers={HEADER: "legal"})

    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == answer(server, "legal")


@pytest.mark.parametrize("adapter", [None, "medical"])
def test_invocations_inputs_parameters_payload(server: Server, adapter: str | None):
    body = {"inputs": "Tell me a story", "parameters": {"max_new_tokens": 8, "do_sample": False}}
    headers = {HEADER: adapter} if adapter else {}
    with server.client() as http:
        response = http.post("/invocations", json=body, headers=headers)

    assert response.status_code == 200, response.text
    assert response.json() == [{"generated_text": completion_text(server, adapter or MODEL)}]


def test_invocations_inputs_payload_unknown_parameter_is_refused(server: Server):
    with server.client() as http:
        response = http.post("/invocations", json={"inputs": "Hi", "parameters": {"best_of": 2}})

    assert response.status_code == 400
    assert "best_of" in response.json()["error"]["message"]


def test_invocations_without_header_take_the_adapter_from_the_body(server: Server):
    """boto3's invoke_endpoint cannot set the adapter header: the body's `model` picks it."""
    chat_body = {"model": "legal", "messages": [{"role": "user", "content": "Hello, how are you today?"}], "max_tokens": 8,
                 "temperature": 0}
    inputs_body = {"model": "legal", "inputs": "Tell me a story", "parameters": {"max_new_tokens": 8, "do_sample": False}}
    with server.client() as http:
        chat_answer = http.post("/invocations", json=chat_body)
        inputs_answer = http.post("/invocations", json=inputs_body)

    assert chat_answer.status_code == 200, chat_answer.text
    assert chat_answer.json()["choices"][0]["message"]["content"] == answer(server, "legal") != answer(server, MODEL)
    assert inputs_answer.json() == [{"generated_text": completion_text(server, "legal")}]
    assert completion_text(server, "legal") != completion_text(server, MODEL)


def test_third_adapter_promoted_is_served_without_restart(server: Server, fleet: Fleet):
    fleet.promote("finance", "v1")

    wait_until(lambda: served(server)["adapters"].get("finance") == "v1", "finance v1 loaded")
    assert chat(server, "finance").status_code == 200
    assert server.process.poll() is None
    assert server.output().count("starting vLLM") == 1


def test_new_version_swaps_in_and_rollback_restores_the_old(server: Server, fleet: Fleet):
    v1_answer = answer(server, "medical")

    fleet.promote("medical", "v2")
    wait_until(lambda: served(server)["adapters"]["medical"] == "v2", "medical v2 serving")
    v2_answer = answer(server, "medical")
    fleet.rollback("medical")
    wait_until(lambda: served(server)["adapters"]["medical"] == "v1", "medical back on v1")

    assert v2_answer != v1_answer
    assert answer(server, "medical") == v1_answer
    with server.client() as http:
        ids = sorted(entry["id"] for entry in http.get("/v1/models").json()["data"])
    assert ids == sorted([MODEL, "medical", "legal", "finance"])


def test_corrupt_adapter_in_store_is_refused_and_old_version_keeps_serving(server: Server, fleet: Fleet):
    before = answer(server, "legal")
    fleet.publish("legal", "v2", seed=22)
    fleet.corrupt("legal", "v2")

    fleet.promote("legal", "v2")
    wait_until(lambda: "adapter legal: version v2 not served" in server.output(), "refusal logged")

    assert "checksum mismatch" in server.output()
    assert served(server)["adapters"]["legal"] == "v1"
    assert answer(server, "legal") == before


def test_an_adapter_the_plan_does_not_allow_is_refused_before_vllm_and_the_old_version_stays(server: Server, fleet: Fleet):
    before = answer(server, "finance")

    fleet.promote_bad_versions()  # finance v2: rank 32 beyond the plan's lora.max_rank 16
    wait_until(lambda: "adapter finance: version v2 not served" in server.output(), "refusal logged")

    refusal = "'finance' version 'v2' refused on this server: adapter rejected [rank]: r = 32 exceeds the model's lora.max_rank 16"
    assert refusal in server.output()
    assert served(server)["adapters"]["finance"] == "v1"
    assert answer(server, "finance") == before


def test_staged_rollout_moves_only_servers_inside_the_fraction(server: Server, fleet: Fleet):
    fleet.publish("medical", "v3", seed=13)
    fleet.publish("cardio", "v1", seed=4)
    position = rollout_position("server-a", "medical", "v3")  # this server's fixed place in [0, 1)

    fleet.registry.promote(MODEL, STAGE, "medical", "v3", fraction=position / 2, actor=ACTOR)
    fleet.promote("cardio", "v1")  # a later change: once it is served, the rollout was seen too
    wait_until(lambda: "cardio" in served(server)["adapters"], "cardio v1 served")
    outside = served(server)["adapters"]["medical"]
    fleet.registry.promote(MODEL, STAGE, "medical", "v3", fraction=position + (1 - position) / 2, actor=ACTOR)
    wait_until(lambda: served(server)["adapters"]["medical"] == "v3", "medical v3 once the fraction covers this server")

    assert outside == "v1"
    assert chat(server, "medical").status_code == 200


def test_runtime_lora_routes_refuse_non_local_callers(server: Server, fleet: Fleet):
    body = {"lora_name": "evil", "lora_path": str(fleet.model_dir)}

    with client_from_outside(server.port, timeout=30) as http:
        load = http.post("/v1/load_lora_adapter", json=body)
        unload = http.post("/v1/unload_lora_adapter", json={"lora_name": "legal@v1"})
        sagemaker_load = http.post("/adapters", json={"name": "evil", "src": str(fleet.model_dir)})
        chat_ok = http.post(
            "/v1/chat/completions", json={"model": "medical", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
        )

    assert (load.status_code, unload.status_code, sagemaker_load.status_code) == (403, 403, 403)
    assert chat_ok.status_code == 200
    assert "evil" not in served(server)["adapters"]
    with server.client() as http:
        assert "evil" not in {entry["id"] for entry in http.get("/v1/models").json()["data"]}


def test_emf_metrics_lines_on_stdout(server: Server):
    started_ms = time.time() * 1000
    answer(server, MODEL)

    def records() -> list[dict]:
        lines = [line for line in server.output().splitlines() if line.startswith('{"_aws"')]
        return [r for r in map(json.loads, lines) if r["_aws"]["Timestamp"] >= started_ms and "TimeToFirstTokenP50" in r]

    wait_until(lambda: records(), "an EMF record with TTFT percentiles for this test's request")
    record = records()[0]
    directive = record["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == telemetry.NAMESPACE
    assert directive["Dimensions"] == [list(telemetry.DIMENSIONS)]
    assert {name: record[name] for name in telemetry.DIMENSIONS} == telemetry.dimensions(MODEL, STAGE, "sagemaker")
    assert {"RequestsWaiting", "RequestsRunning", "KvCacheUsage", "AdaptersLoaded"} <= set(record)
    assert record["AdaptersLoaded"] == len(served(server)["adapters"])
    assert record["TimeToFirstTokenP50"] > 0
