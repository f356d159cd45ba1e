"""SageMaker's Hugging Face payload, `{"inputs": ..., "parameters": {...}}`, as a vLLM completion.

The SageMaker SDK's Hugging Face LLM examples send this shape (the text-generation-inference
convention) and read back `[{"generated_text": ...}]`; vLLM's `/invocations` takes only
OpenAI-style bodies. These pure functions translate both ways; the middleware applies them.
"""

from __future__ import annotations

from typing import Any

from llmfleet.model_store.errors import EXIT_BAD_INPUT, LlmfleetError

# TGI parameter -> vLLM completion field (same meaning, other name or same name).
_RENAMED = {
    "max_new_tokens": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "repetition_penalty": "repetition_penalty",
    "frequency_penalty": "frequency_penalty",
    "seed": "seed",
    "stop": "stop",
    "truncate": "truncate_prompt_tokens",
    "return_full_text": "echo",
}
# Handled specially: greedy decoding when false.
_SAMPLING_SWITCH = "do_sample"
ALLOWED_PARAMETERS = tuple(sorted([*_RENAMED, _SAMPLING_SWITCH]))
# `model` is ours, not TGI's: boto3's invoke_endpoint cannot set the adapter header, so the
# body names the adapter (or the base model).
TOP_LEVEL_FIELDS = ("inputs", "parameters", "model")


class PayloadError(LlmfleetError):
    """A SageMaker payload this server cannot translate; the message names the field."""

    exit_code = EXIT_BAD_INPUT


def is_tgi_payload(body: Any) -> bool:
    return isinstance(body, dict) and "inputs" in body and "messages" not in body and "prompt" not in body


def tgi_to_completion(body: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI completion request for a `{"inputs", "parameters"}` body."""
    unknown_top = sorted(set(body) - set(TOP_LEVEL_FIELDS))
    if unknown_top:
        raise PayloadError(
            f"SageMaker payload: unsupported top-level field(s) {unknown_top}; allowed: {list(TOP_LEVEL_FIELDS)} "
            "(for streaming send an OpenAI-style body with \"stream\": true)"
        )
    inputs = body["inputs"]
    if not (isinstance(inputs, str) or (isinstance(inputs, list) and inputs and all(isinstance(i, str) for i in inputs))):
        raise PayloadError("SageMaker payload: 'inputs' must be a string or a non-empty list of strings")
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise PayloadError(f"SageMaker payload: 'parameters' must be an object, got {type(parameters).__name__}")
    unknown = sorted(set(parameters) - set(ALLOWED_PARAMETERS))
    if unknown:
        raise PayloadError(f"SageMaker payload: unsupported parameter(s) {unknown}; allowed: {list(ALLOWED_PARAMETERS)}")
    request: dict[str, Any] = {"prompt": inputs}
    if "model" in body:
        if not isinstance(body["model"], str):
            raise PayloadError(f"SageMaker payload: 'model' must be a model or adapter name, got {body['model']!r}")
        request["model"] = body["model"]
    for tgi_name, vllm_name in _RENAMED.items():
        if tgi_name in parameters:
            request[vllm_name] = parameters[tgi_name]
    if parameters.get(_SAMPLING_SWITCH) is False:
        request["temperature"] = 0.0
    return request


def completion_to_generated_text(response: dict[str, Any]) -> list[dict[str, str]]:
    """`[{"generated_text": ...}]`, one entry per prompt, as the SageMaker examples read it."""
    choices = sorted(response.get("choices", []), key=lambda choice: choice.get("index", 0))
    return [{"generated_text": choice.get("text", "")} for choice in choices]
