"""`llmfleet invoke --sagemaker`: the SageMaker runtime call's shape, against moto's server.

moto's sagemaker-runtime answers with a queued canned body, so this pins what we send
(path, headers, the chat body) and how we read a vLLM chat completion back; the same body
against the real vLLM's `/invocations` is in tests/e2e/test_local_fleet.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import httpx2
from botocore.exceptions import ClientError
import pytest

from openai.types.chat import ChatCompletionChunk

from llmfleet.model_store.ops.chat import (
    chat_request,
    invoke_sagemaker,
    parse_chat_response,
    reasoning_and_content,
    sse_chunks,
    stream_sagemaker,
)
from llmfleet.model_store.contract.inference_components import inference_component_of, TAG_INFERENCE_COMPONENT

LLMFLEET = str(Path(sys.executable).parent / "llmfleet")


def _completion(content: str, reasoning: str | None = None, model: str = "qwen3-small") -> dict:
    """A chat completion as vLLM's /invocations returns it (reasoning parser on or off)."""
    message = {"role": "assistant", "content": content, "reasoning_content": reasoning}
    return {"object": "chat.completion", "model": model, "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}


def _queue(endpoint_url: str, *bodies: dict) -> None:
    """Queue moto's next sagemaker-runtime answers (moto's documented static-results API)."""
    results = [{"Body": json.dumps(body), "ContentType": "application/json"} for body in bodies]
    httpx2.post(f"{endpoint_url}/moto-api/static/sagemaker/endpoint-results", json={"results": results}).raise_for_status()


def test_invoke_endpoint_sends_the_chat_body_as_json_and_reads_reasoning_apart(aws_env: str):
    _queue(aws_env, _completion("Four.", reasoning="Two plus two is four."))
    runtime = boto3.client("sagemaker-runtime", region_name="us-east-1")
    sent = []
    runtime.meta.events.register("before-send.sagemaker-runtime.InvokeEndpoint", lambda request, **_: sent.append(request))
    body = chat_request("medical", "What is two plus two?", max_tokens=32, temperature=0.0, stream=False)

    answer = invoke_sagemaker(runtime, "qwen3-small-prod", body)

    (request,) = sent
    assert request.url.endswith("/endpoints/qwen3-small-prod/invocations")
    assert request.headers["Content-Type"] == b"application/json"
    assert request.headers["Accept"] == b"application/json"
    assert json.loads(request.body) == {
        "model": "medical",
        "messages": [{"role": "user", "content": "What is two plus two?"}],
        "max_tokens": 32,
        "temperature": 0.0,
    }
    assert parse_chat_response(answer) == ("Two plus two is four.", "Four.")


def _endpoint(name: str, tags: list[dict] | None = None) -> None:
    """An endpoint in moto, tagged as the stack tags it. moto 5.2.5 has no inference-component API
    (CreateInferenceComponent and friends are missing), so the endpoint is a plain variant that carries
    the tag; the component itself is checked on the synthesized template (tests/synth)."""
    sagemaker = boto3.client("sagemaker", region_name="us-east-1")
    sagemaker.create_model(
        ModelName=name,
        ExecutionRoleArn="arn:aws:iam::123456789012:role/llmfleet-sagemaker",
        PrimaryContainer={"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/llmfleet:1"},
    )
    variant = {"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.g4dn.xlarge"}
    sagemaker.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant])
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=name, Tags=tags or [])


def test_the_component_to_name_comes_from_the_endpoints_tag(aws_env: str):
    sagemaker = boto3.client("sagemaker", region_name="us-east-1")
    _endpoint("scales-to-zero", [{"Key": TAG_INFERENCE_COMPONENT, "Value": "scales-to-zero"}, {"Key": "other", "Value": "x"}])
    _endpoint("plain-variant", [{"Key": "other", "Value": "x"}])
    assert inference_component_of(sagemaker, "scales-to-zero") == "scales-to-zero"
    assert inference_component_of(sagemaker, "plain-variant") is None
    # An endpoint that is not there: the invocation reports it, not the look-up.
    assert inference_component_of(sagemaker, "no-such-endpoint") is None


def test_invocations_of_a_component_name_it_in_the_header_sagemaker_routes_by(aws_env: str):
    _queue(aws_env, _completion("Four."), _completion("Five."))
    runtime = boto3.client("sagemaker-runtime", region_name="us-east-1")
    sent = []
    for operation in ("InvokeEndpoint", "InvokeEndpointWithResponseStream"):
        runtime.meta.events.register(f"before-send.sagemaker-runtime.{operation}", lambda request, **_: sent.append(request))
    body = chat_request("qwen25-7b-awq", "Hi", max_tokens=8, temperature=0.0, stream=False)

    invoke_sagemaker(runtime, "demo-prod-qwen25-7b-awq", body, "demo-prod-qwen25-7b-awq")
    invoke_sagemaker(runtime, "demo-prod-qwen3-small", body)
    # moto 5.2.5 has no InvokeEndpointWithResponseStream (404): only the request it was sent is checked.
    with pytest.raises(ClientError):
        list(stream_sagemaker(runtime, "demo-prod-qwen25-7b-awq", {**body, "stream": True}, "demo-prod-qwen25-7b-awq"))

    component, plain, streamed = sent
    assert component.headers["X-Amzn-SageMaker-Inference-Component"] == b"demo-prod-qwen25-7b-awq"
    assert "X-Amzn-SageMaker-Inference-Component" not in plain.headers
    assert streamed.headers["X-Amzn-SageMaker-Inference-Component"] == b"demo-prod-qwen25-7b-awq"


def test_cli_invoke_finds_the_component_of_a_scale_to_zero_endpoint_by_itself(aws_env: str, tmp_path: Path):
    _endpoint("demo-prod-qwen25-7b-awq", [{"Key": TAG_INFERENCE_COMPONENT, "Value": "demo-prod-qwen25-7b-awq"}])
    _queue(aws_env, _completion("Woken up.", model="qwen25-7b-awq"))
    result = _invoke(tmp_path, "qwen25-7b-awq", "--sagemaker", "demo-prod-qwen25-7b-awq", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["content"] == "Woken up."


def test_parse_reads_vllm_reasoning_field_under_either_name():
    assert parse_chat_response({"choices": [{"message": {"content": "a", "reasoning": "r"}}]}) == ("r", "a")
    assert parse_chat_response({"choices": [{"message": {"content": None}}]}) == ("", "")


@pytest.mark.parametrize(
    ("delta", "expected"),
    [({"reasoning": "think"}, ("think", "")), ({"reasoning_content": "think"}, ("think", "")), ({"content": "hi"}, ("", "hi"))],
)
def test_streamed_sdk_deltas_split_reasoning_from_answer(delta: dict, expected: tuple[str, str]):
    """The OpenAI SDK keeps vLLM's extra delta fields; invoke reads them the same way as whole messages."""
    chunk = ChatCompletionChunk.model_validate(
        {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": [{"index": 0, "delta": delta}]}
    )
    assert reasoning_and_content(chunk.choices[0].delta.model_dump()) == expected


def _invoke(cwd: Path, target: str, *options: str) -> subprocess.CompletedProcess:
    """`llmfleet invoke TARGET Hi OPTIONS...` as a user runs it, against the moto server of `aws_env`."""
    return subprocess.run(
        [LLMFLEET, "invoke", target, "Hi", *options],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "AWS_DEFAULT_REGION": "us-east-1"},
        timeout=120,
    )


def test_cli_invoke_sagemaker_prints_the_answer(aws_env: str, tmp_path: Path):
    _queue(aws_env, _completion("Hello from the endpoint.", model="legal@3f2a"))
    result = _invoke(tmp_path, "qwen3-small:legal", "--sagemaker", "qwen3-small-prod", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"model": "legal", "reasoning": "", "content": "Hello from the endpoint."}


def test_cli_invoke_sagemaker_refuses_an_answer_from_the_base_model_when_an_adapter_was_asked(aws_env: str, tmp_path: Path):
    _queue(aws_env, _completion("base model text", model="qwen3-small"))
    result = _invoke(tmp_path, "qwen3-small:finance", "--sagemaker", "qwen3-small-prod")
    assert result.returncode == 1
    assert "answered with model 'qwen3-small', not adapter 'finance'" in result.stderr


def test_cli_invoke_sagemaker_refuses_a_body_that_is_not_a_completion(aws_env: str, tmp_path: Path):
    _queue(aws_env, {"message": "not a completion"})
    result = _invoke(tmp_path, "qwen3-small", "--sagemaker", "other-endpoint")
    assert result.returncode == 1
    assert "SageMaker endpoint 'other-endpoint'" in result.stderr


@pytest.mark.parametrize("target", ["", ":medical", "qwen3-small:"])
def test_cli_invoke_rejects_malformed_targets(target: str, tmp_path: Path):
    result = _invoke(tmp_path, target, "--sagemaker", "x")
    assert result.returncode == 2
    assert "is not MODEL or MODEL:ADAPTER" in result.stderr


def test_stream_events_are_decoded_however_the_payload_parts_cut_them():
    """InvokeEndpointWithResponseStream hands out PayloadParts cut at arbitrary bytes."""
    events = [{"choices": [{"delta": {"content": f"tok{i} é"}}]} for i in range(3)]
    stream = b"".join(b"data: " + json.dumps(e, ensure_ascii=False).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    for size in (1, 7, len(stream)):
        parts = [stream[i : i + size] for i in range(0, len(stream), size)]
        assert list(sse_chunks(parts)) == events
    assert list(sse_chunks([b": keep-alive\n\n", b"data: {\"a\": 1}\n\n"])) == [{"a": 1}]
