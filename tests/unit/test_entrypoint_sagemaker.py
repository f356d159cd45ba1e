"""SageMaker's {"inputs", "parameters"} payload <-> vLLM completions."""

from __future__ import annotations

import pytest

from llmfleet.containers.entrypoint.sagemaker import (
    ALLOWED_PARAMETERS,
    PayloadError,
    completion_to_generated_text,
    is_tgi_payload,
    tgi_to_completion,
)


def test_parameters_map_to_completion_fields():
    body = {
        "inputs": "What is LoRA?",
        "parameters": {
            "max_new_tokens": 64,
            "temperature": 0.7,
            "top_p": 0.9,
            "top_k": 40,
            "repetition_penalty": 1.1,
            "frequency_penalty": 0.2,
            "seed": 7,
            "stop": ["\n\n"],
            "truncate": 1000,
            "return_full_text": True,
        },
    }

    assert tgi_to_completion(body) == {
        "prompt": "What is LoRA?",
        "max_tokens": 64,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 40,
        "repetition_penalty": 1.1,
        "frequency_penalty": 0.2,
        "seed": 7,
        "stop": ["\n\n"],
        "truncate_prompt_tokens": 1000,
        "echo": True,
    }


def test_do_sample_false_is_greedy_whatever_the_temperature():
    assert tgi_to_completion({"inputs": "x", "parameters": {"do_sample": False, "temperature": 0.9}})["temperature"] == 0.0


def test_do_sample_true_keeps_the_temperature():
    assert tgi_to_completion({"inputs": "x", "parameters": {"do_sample": True, "temperature": 0.9}})["temperature"] == 0.9


def test_inputs_alone_is_a_completion_with_vllm_defaults():
    assert tgi_to_completion({"inputs": ["a", "b"]}) == {"prompt": ["a", "b"]}


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"inputs": "x", "parameters": {"best_of": 2}}, "best_of"),
        ({"inputs": "x", "stream": True}, "stream"),
        ({"inputs": 3}, "'inputs'"),
        ({"inputs": []}, "'inputs'"),
        ({"inputs": "x", "parameters": [1]}, "'parameters'"),
        ({"inputs": "x", "model": ["medical"]}, "'model'"),
    ],
)
def test_payloads_that_cannot_be_translated_name_the_field(body: dict, named: str):
    with pytest.raises(PayloadError, match=named):
        tgi_to_completion(body)


def test_model_names_the_adapter_for_callers_that_cannot_set_the_header():
    assert tgi_to_completion({"inputs": "x", "model": "medical"}) == {"prompt": "x", "model": "medical"}


def test_the_refusal_lists_what_is_allowed():
    with pytest.raises(PayloadError) as refused:
        tgi_to_completion({"inputs": "x", "parameters": {"details": True}})

    assert all(name in str(refused.value) for name in ALLOWED_PARAMETERS)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"inputs": "x"}, True),
        ({"inputs": "x", "parameters": {}}, True),
        ({"messages": [], "inputs": "x"}, False),
        ({"prompt": "x"}, False),
        (["inputs"], False),
        (None, False),
    ],
)
def test_only_inputs_bodies_are_recognised(body, expected: bool):
    assert is_tgi_payload(body) is expected


def test_choices_become_generated_text_in_prompt_order():
    response = {"choices": [{"index": 1, "text": "b"}, {"index": 0, "text": "a"}]}

    assert completion_to_generated_text(response) == [{"generated_text": "a"}, {"generated_text": "b"}]
