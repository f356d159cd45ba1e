"""The gateway in front of the real CPU vLLM, through the OpenAI SDK: the base model and adapters
(one promoted while the gateway runs, reached by the model's wildcard route), consumers with
different models and limits (401, 403, 429 on rpm and on tpm, budget exhaustion), usage rows that
match the tokens vLLM reported, and a model that is down answered by its fallback.

The gateway's config is made by the same generator the stack uses, from the stand-in's plan."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from llmfleet.model_store.gateway.consumers import ConsumersFile
from llmfleet.model_store.gateway.config import gateway_config
from llmfleet.model_store.contract.manifest import AdapterRef, parse_fleet
from tests.conftest import free_port
from tests.e2e.conftest import MODEL, boot_server, wait_until
from tests.gateway_harness import error_body, running_gateway

DOWN = "old-model"  # a model whose servers are gone; its fallback is MODEL
HELLO = [{"role": "user", "content": "Tell me about the sea."}]
PRICE_PER_MILLION = 1000.0  # so that two requests of the tiny model exhaust BUDGET_USD
BUDGET_USD = 0.03
FLEET = f"""
name: e2e
stage: test
models:
  - {{name: {MODEL}, source: s3://llmfleet-store/models/{MODEL}, architecture: Qwen/Qwen3-0.6B, lora: {{}}}}
  - {{name: {DOWN}, source: s3://llmfleet-store/models/{DOWN}, architecture: Qwen/Qwen3-0.6B}}
gateway:
  enabled: true
  fallbacks: {{{DOWN}: [{MODEL}]}}
  prices: {{{MODEL}: {{prompt_usd_per_million: {PRICE_PER_MILLION}, completion_usd_per_million: {PRICE_PER_MILLION}}}}}
"""
CONSUMERS = {
    "consumers": [
        {"name": "search", "models": [MODEL, f"{MODEL}:*", DOWN]},
        {"name": "burst", "models": [MODEL], "rpm": 5},
        {"name": "legal", "models": [f"{MODEL}:legal"], "rpm": 100},
        {"name": "tokens", "models": [f"{MODEL}:legal"], "tpm": 40},
        {"name": "budget", "models": [MODEL], "monthly_budget_usd": BUDGET_USD},
        {"name": "ops", "models": ["*"]},
    ]
}


@pytest.fixture(scope="module")
def upstream(fleet):
    server = boot_server(fleet, "gateway-upstream")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(fleet, upstream, moto_endpoint, tmp_path_factory):
    manifest = parse_fleet(FLEET)
    served = fleet.plan.model_copy(update={"adapters": [AdapterRef(name="medical")]})
    gone = fleet.plan.model_copy(update={"model_name": DOWN, "lora_max_rank": None})
    config = gateway_config(
        manifest,
        [served, gone],
        ConsumersFile.model_validate(CONSUMERS),
        ecs_base_urls={MODEL: f"{upstream.url}/v1", DOWN: f"http://127.0.0.1:{free_port()}/v1"},
    )
    upstream_keys = {upstream_env: "not-checked-by-the-test-server" for upstream_env in
                     {u.api_key_env for u in config.upstreams.values()}}
    with running_gateway(config, tmp_path_factory.mktemp("gateway"), moto_endpoint, upstream_keys) as gateway:
        yield gateway


def chat(gateway, consumer: str, model: str, **options):
    client = gateway.client(gateway.issued[consumer], timeout=120)
    return client.chat.completions.create(model=model, messages=HELLO, max_tokens=4, temperature=0, **options)


def refused(call) -> tuple[int, dict]:
    with pytest.raises(openai.APIStatusError) as caught:
        call()
    return caught.value.status_code, error_body(caught.value)


def test_base_model_streams_and_its_usage_row_matches_vllm(gateway) -> None:
    answer = chat(gateway, "ops", MODEL)
    assert answer.choices[0].message.content and answer.usage.completion_tokens == 4
    [row] = [r for r in gateway.wait_rows("ops", 1) if r["route"] == MODEL]
    assert (row["prompt_tokens"], row["completion_tokens"]) == (answer.usage.prompt_tokens, answer.usage.completion_tokens)
    assert (row["model"], row["adapter"], row["status"]) == (MODEL, None, 200)
    chunks = list(chat(gateway, "ops", MODEL, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == answer.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == 4


def test_adapters_and_one_promoted_while_running(gateway, fleet, upstream) -> None:
    base = chat(gateway, "search", MODEL).choices[0].message.content
    medical = chat(gateway, "search", f"{MODEL}:medical").choices[0].message.content
    assert medical != base  # the adapter answered, not the base model
    fleet.publish("ocean", "v1", seed=7)
    fleet.promote("ocean", "v1")
    wait_until(lambda: "ocean" in {m["id"] for m in httpx.get(f"{upstream.url}/v1/models").json()["data"]},
               "vLLM serves the adapter promoted while running")
    ocean = chat(gateway, "ops", f"{MODEL}:ocean")
    assert ocean.choices[0].message.content not in ("", base)
    row = [r for r in gateway.wait_rows("ops", 2) if r["route"] == f"{MODEL}:ocean"]
    assert row and (row[-1]["adapter"], row[-1]["completion_tokens"]) == ("ocean", ocean.usage.completion_tokens)


def test_unknown_key_is_401_and_a_model_not_given_is_403(gateway) -> None:
    status, body = refused(lambda: gateway.client("sk-llmfleet-unknown").chat.completions.create(model=MODEL, messages=HELLO))
    assert (status, body["type"]) == (401, "authentication_error")
    status, body = refused(lambda: chat(gateway, "legal", MODEL))
    assert (status, body["type"], body["param"]) == (403, "permission_error", "model")
    assert chat(gateway, "legal", f"{MODEL}:legal").choices[0].message.content


def test_rpm_then_tpm_limits_are_429(gateway) -> None:
    outcomes = []
    for _ in range(7):
        try:
            chat(gateway, "burst", MODEL)
            outcomes.append(200)
        except openai.RateLimitError as error:
            outcomes.append(error_body(error)["param"])
    # 5 per minute; a run across a minute's end may let one more through, never fewer
    assert outcomes[:5] == [200] * 5 and "rpm" in outcomes[5:]
    used = 0
    for count in range(1, 11):  # 40 tokens a minute, each request ~20
        try:
            answer = chat(gateway, "tokens", f"{MODEL}:legal")
        except openai.RateLimitError as error:
            assert error_body(error)["param"] == "tpm" and used >= 40
            break
        used += answer.usage.total_tokens
        gateway.wait_rows("tokens", count)
        time.sleep(0.3)  # the logger counts tokens after the answer is sent
    else:
        pytest.fail("no 429 on tokens per minute")


def test_budget_exhaustion(gateway) -> None:
    spent = 0.0
    while spent < BUDGET_USD:
        answer = chat(gateway, "budget", MODEL)
        spent += answer.usage.total_tokens * PRICE_PER_MILLION / 1e6
    rows = gateway.wait_rows("budget", 2)
    time.sleep(0.3)
    assert sum(r["cost_usd"] for r in rows) == pytest.approx(spent)
    status, body = refused(lambda: chat(gateway, "budget", MODEL))
    assert (status, body["type"], body["param"]) == (429, "insufficient_quota", "monthly_budget_usd")


def test_a_model_down_is_answered_by_its_fallback(gateway) -> None:
    answer = chat(gateway, "search", DOWN)
    assert answer.choices[0].message.content
    assert answer.usage.completion_tokens == 4
