"""Image requests are refused before the pipeline: each problem a 400 naming its field."""

from __future__ import annotations

import json

import pytest

from llmfleet.containers.image_server.validation import ImageRequest, ImageRequestError, openai_request, sagemaker_request
from llmfleet.model_store.contract.plan import ImageSettings

SETTINGS = ImageSettings(
    dtype="bfloat16", steps=4, max_steps=50, guidance_scale=0.0, size=1024, max_size=1024, size_multiple=16,
    max_images=4, max_batch=4, offload="none", drain_seconds=110,
)  # fmt: skip


def openai(body) -> ImageRequest:
    return openai_request(json.dumps(body).encode(), SETTINGS, "sd35")


def refused_field(call, *args) -> str:
    with pytest.raises(ImageRequestError) as caught:
        call(*args)
    assert str(caught.value).startswith(f"{caught.value.field}:")
    return caught.value.field


def test_defaults_come_from_the_plan():
    assert openai({"prompt": "a cat"}) == ImageRequest("a cat", 1, 1024, 1024, 4, 0.0, None)


def test_every_openai_field_is_read():
    request = openai(
        {"prompt": "a cat", "model": "sd35", "n": 3, "size": "512x768", "response_format": "b64_json", "seed": 9,
         "num_inference_steps": 8, "guidance_scale": 3.5}
    )  # fmt: skip
    assert request == ImageRequest("a cat", 3, 512, 768, 8, 3.5, 9)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "a cat", "size": "1000x1024"}, "size"),
        ({"prompt": "a cat", "size": "2048x2048"}, "size"),
        ({"prompt": "a cat", "size": "big"}, "size"),
        ({"prompt": "a cat", "n": 5}, "n"),
        ({"prompt": "a cat", "n": 0}, "n"),
        ({"prompt": "a cat", "n": True}, "n"),
        ({"prompt": "a cat", "num_inference_steps": 0}, "num_inference_steps"),
        ({"prompt": "a cat", "num_inference_steps": 1000}, "num_inference_steps"),
        ({"prompt": "a cat", "guidance_scale": -1}, "guidance_scale"),
        ({"prompt": "a cat", "seed": -1}, "seed"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x" * 5000}, "prompt"),
        ({}, "prompt"),
        ({"prompt": "a cat", "response_format": "url"}, "response_format"),
        ({"prompt": "a cat", "model": "other"}, "model"),
        ({"prompt": "a cat", "quality": "hd"}, "quality"),
    ],
)
def test_openai_refusals_name_the_field(body, field):
    assert refused_field(openai, body) == field


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff"])
def test_a_body_that_is_not_a_json_object_is_refused(raw):
    assert refused_field(openai_request, raw, SETTINGS, "sd35") == "body"


def test_sagemaker_payload_reads_inputs_and_parameters():
    body = {"inputs": "a dog", "parameters": {"width": 512, "height": 256, "num_inference_steps": 2, "num_images_per_prompt": 2, "seed": 1}}
    assert sagemaker_request(json.dumps(body).encode(), SETTINGS) == ImageRequest("a dog", 2, 512, 256, 2, 0.0, 1)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"inputs": "a dog", "parameters": {"width": 1000}}, "parameters.width"),
        ({"inputs": "a dog", "parameters": {"num_inference_steps": 0}}, "parameters.num_inference_steps"),
        ({"inputs": "a dog", "parameters": {"num_images_per_prompt": 9}}, "parameters.num_images_per_prompt"),
        ({"inputs": "a dog", "parameters": {"strength": 1}}, "parameters.strength"),
        ({"inputs": "a dog", "parameters": [1]}, "parameters"),
        ({"inputs": ""}, "inputs"),
        ({"prompt": "a dog"}, "prompt"),
    ],
)
def test_sagemaker_refusals_name_the_field(body, field):
    assert refused_field(sagemaker_request, json.dumps(body).encode(), SETTINGS) == field


def test_the_clis_bodies_are_what_the_server_reads():
    from llmfleet.scripts.invoke_cli import image_body_openai, image_body_sagemaker

    sagemaker = image_body_sagemaker("a cat", size="512x256", steps=2, seed=3, n=2)
    assert sagemaker_request(json.dumps(sagemaker).encode(), SETTINGS) == ImageRequest("a cat", 2, 512, 256, 2, 0.0, 3)
    body = image_body_openai("sd35", "a cat", size="512x256", steps=2, seed=3, n=2)
    wire = {**{k: v for k, v in body.items() if k != "extra_body"}, **body["extra_body"]}  # as the SDK sends it
    assert openai(wire) == ImageRequest("a cat", 2, 512, 256, 2, 0.0, 3)
