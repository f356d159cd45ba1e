"""The front door's bounds as the plan decides them (model_store/contract/request_limits.py), and the
manifest's media allowlist on its way to vLLM's own flag."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from llmfleet.containers.entrypoint.vllm_command import serve_argv, validate_argv
from llmfleet.model_store.facts.families import facts_from_config
from llmfleet.model_store.planning.fleet import load_and_plan
from llmfleet.model_store.contract.manifest import FleetManifest
from llmfleet.model_store.contract.plan import ServingPlan, vllm_argv, VllmSettings
from llmfleet.model_store.planning.text import plan_model
from llmfleet.model_store.contract.request_limits import (
    BODY_BYTES_PER_TOKEN,
    BODY_ENVELOPE_BYTES,
    body_seconds,
    declared_length,
    MAX_LOGPROBS,
    MAX_N,
    MEDIA_BODY_BYTES,
    parse_json,
    RequestRefused,
    text_limits,
)
from tests.conftest import REPO

VL_CONFIG = REPO / "tests/data/hf_configs/Qwen__Qwen2.5-VL-7B-Instruct.json"


def text_plans() -> list[ServingPlan]:
    return [plan for plan in load_and_plan(REPO / "fleet.yaml")[1] if plan.kind == "text"]


def vision_plan(**model) -> ServingPlan:
    config = json.loads(VL_CONFIG.read_text())
    arch = facts_from_config({k: v for k, v in config.items() if not k.startswith("_")}, source="qwen-vl")
    spec = {"name": "vl", "source": "s3://llmfleet-store/models/vl", "max_model_len": 32768, "serving": {"instance_type": "g6e.xlarge"}, **model}
    fleet = FleetManifest.model_validate({"name": "f", "models": [spec]})
    return plan_model(fleet, fleet.models[0], arch)


@pytest.mark.parametrize("plan", text_plans(), ids=lambda plan: plan.model_name)
def test_every_bound_is_derived_from_the_plan(plan: ServingPlan):
    limits = text_limits(plan)

    assert limits.max_tokens == plan.vllm.max_model_len
    assert limits.max_body_bytes == BODY_ENVELOPE_BYTES + plan.vllm.max_model_len * BODY_BYTES_PER_TOKEN
    assert limits.body_seconds == body_seconds(limits.max_body_bytes)
    assert 1 <= limits.max_n <= min(MAX_N, plan.vllm.max_num_seqs)
    assert limits.max_logprobs == MAX_LOGPROBS
    assert limits.media_domains == ()


def test_a_multimodal_plan_leaves_room_for_inline_media_and_a_text_only_one_does_not():
    with_images, text_only = vision_plan(), vision_plan(language_model_only=True)

    assert text_limits(with_images).max_body_bytes - text_limits(text_only).max_body_bytes == MEDIA_BODY_BYTES
    assert text_limits(with_images).body_seconds > text_limits(text_only).body_seconds


def test_plans_without_media_domains_are_written_as_before_the_field():
    """The plan JSON (the container's LLMFLEET_PLAN, the compile-cache key's settings) and the
    argv of every committed fleet keep their bytes: the unset field is not written."""
    for plan in text_plans():
        text = plan.to_json()
        assert set(json.loads(text)["vllm"]) == set(VllmSettings.model_fields) - {"allowed_media_domains"}
        assert ServingPlan.from_json(text).to_json() == text
        assert "--allowed-media-domains" not in vllm_argv(plan.vllm, model="/m")


def test_media_domains_become_vllms_own_flag_which_vllm_accepts():
    plan = vision_plan(serving={"instance_type": "g6e.xlarge", "media_domains": ["images.example.com", "cdn.example.org"]})

    argv = serve_argv(plan, model="/models/vl/main", port=8000, lora_modules={})

    flag = argv.index("--allowed-media-domains")
    assert argv[flag + 1 : flag + 3] == ["images.example.com", "cdn.example.org"]
    assert text_limits(plan).media_domains == ("images.example.com", "cdn.example.org")
    assert ServingPlan.from_json(plan.to_json()) == plan
    validate_argv(argv)


@pytest.mark.parametrize(
    "domain", ["https://images.example.com", "images.example.com/x", "*.example.com", "169.254.169.254", "localhost", "Images.example.com", "a.b:443", ""]
)
def test_media_domains_must_be_plain_hostnames(domain: str):
    model = {"name": "vl", "source": "s3://llmfleet-store/models/vl", "serving": {"media_domains": [domain]}}

    with pytest.raises(ValidationError, match="media_domains"):
        FleetManifest.model_validate({"name": "f", "models": [model]})


def test_media_domains_are_refused_on_an_image_model():
    model = {"name": "img", "source": "s3://llmfleet-store/models/img", "kind": "image", "serving": {"media_domains": ["images.example.com"]}}

    with pytest.raises(ValidationError, match="serving.media_domains"):
        FleetManifest.model_validate({"name": "f", "models": [model]})


@pytest.mark.parametrize(("value", "status"), [("99999999999", 413), ("12x", 400), ("-1", 400), ("１２", 400)])
def test_a_declared_length_is_checked_before_any_byte(value: str, status: int):
    with pytest.raises(RequestRefused) as refused:
        declared_length(value, 1024)

    assert refused.value.status == status
    assert declared_length("1024", 1024) == 1024 and declared_length(None, 1024) is None


def test_json_depth_is_bounded_without_recursion():
    assert json.dumps(parse_json(b"[" * 64 + b"]" * 64, 64)) == "[" * 64 + "]" * 64
    for body in (b"[" * 65 + b"]" * 65, b'{"a":' * 200_000 + b"1" + b"}" * 200_000):
        with pytest.raises(RequestRefused, match="deeper than 64"):
            parse_json(body, 64)
    assert parse_json(b"{not json", 64) is None
