"""The OpenAI chat-completion exchange as the CLI, the tests and any other caller speak it:
the request body, the (reasoning, answer) split of a response, server-sent events cut
anywhere, and SageMaker's two runtime calls. No printing, no CLI."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

SAGEMAKER_CONTENT_TYPE = "application/json"


def chat_request(model: str, prompt: str, *, max_tokens: int, temperature: float | None, stream: bool) -> dict[str, Any]:
    """The OpenAI chat body, the same for the ALB and for SageMaker's `/invocations`."""
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens}
    if temperature is not None:
        body["temperature"] = temperature
    if stream:
        body["stream"] = True
    return body


def reasoning_and_content(message: dict[str, Any]) -> tuple[str, str]:
    """(reasoning, answer) of a message or a streamed delta.

    vLLM's reasoning parsers fill `reasoning_content` (older releases) or `reasoning`
    (0.3x); either may be absent or null.
    """
    return message.get("reasoning_content") or message.get("reasoning") or "", message.get("content") or ""


def parse_chat_response(body: dict[str, Any]) -> tuple[str, str]:
    """(reasoning, answer) of a whole chat completion."""
    return reasoning_and_content(body["choices"][0]["message"])


def sse_chunks(payloads: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """The JSON events of a server-sent-event byte stream cut anywhere (HTTP chunks, SageMaker PayloadParts)."""
    pending = b""
    for payload in payloads:
        pending += payload
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if not line.startswith(b"data:"):
                continue  # blank separators, comments, event names
            data = line.removeprefix(b"data:").strip()
            if data == b"[DONE]":
                return
            yield json.loads(data)


def invoke_sagemaker(runtime, endpoint: str, body: dict[str, Any], component: str | None = None) -> dict[str, Any]:
    """The JSON answer of InvokeEndpoint to the JSON `body` (the container's vLLM answers on
    /invocations). `runtime` is a boto3 sagemaker-runtime client: the SageMaker SDK's predictor
    would add only this JSON round trip. `component` names the inference component of a
    scale-to-zero endpoint."""
    response = runtime.invoke_endpoint(
        EndpointName=endpoint,
        ContentType=SAGEMAKER_CONTENT_TYPE,
        Accept=SAGEMAKER_CONTENT_TYPE,
        Body=json.dumps(body),
        **_named(component),
    )
    return json.loads(response["Body"].read())


def stream_sagemaker(runtime, endpoint: str, body: dict[str, Any], component: str | None = None) -> Iterator[dict[str, Any]]:
    """Chat-completion chunks from InvokeEndpointWithResponseStream (`body` asks for a stream); `component`
    names the inference component of a scale-to-zero endpoint."""
    named = _named(component)
    response = runtime.invoke_endpoint_with_response_stream(
        EndpointName=endpoint, ContentType=SAGEMAKER_CONTENT_TYPE, Accept="text/event-stream", Body=json.dumps(body), **named
    )
    # botocore raises the stream's error events (ModelStreamError...) as EventStreamError.
    return sse_chunks(event["PayloadPart"]["Bytes"] for event in response["Body"] if "PayloadPart" in event)


def _named(component: str | None) -> dict[str, str]:
    """The runtime call's InferenceComponentName argument, when there is a component."""
    return {"InferenceComponentName": component} if component else {}


def answered_by_adapter(response: dict[str, Any], adapter: str) -> bool:
    """Whether vLLM answered with `adapter`: it reports the public name or `name@version`."""
    model = str(response.get("model", ""))
    return model == adapter or model.startswith(adapter + "@")
