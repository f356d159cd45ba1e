"""The image planner on the bundled SD3.5 Large Turbo configs: weights per component,
activations of the images in flight, instance choice, CPU offload only where nothing else fits."""

from __future__ import annotations

import json

import pytest

from llmfleet.model_store.facts.families import ConfigError
from llmfleet.model_store.contract.plan import GIB, ImagePlan, plan_from_json, ServingPlan
from llmfleet.model_store.planning.image import (
    activation_bytes_per_image,
    component_bytes,
    latency_alarm_ms,
    plan_image_model,
    VAE_WORKING_TENSORS,
)
from llmfleet.model_store.planning.kinds import plan_any_model
from llmfleet.model_store.contract.manifest import ManifestError, parse_fleet
from llmfleet.model_store.facts.pipelines import facts_from_record, pipeline_facts, read_known_pipeline
from llmfleet.model_store.planning.fit import PlanError

SD35 = "stabilityai/stable-diffusion-3.5-large-turbo"


def fleet(**model):
    entry = {"name": "sd35", "kind": "image", "architecture": SD35, **model}
    return parse_fleet(json.dumps({"name": "demo", "store": "s3://llmfleet-store", "models": [entry]}))


@pytest.fixture(scope="module")
def facts():
    return facts_from_record(*read_known_pipeline(SD35), source=f"bundled:{SD35}")


def plan(facts, **model) -> ImagePlan:
    manifest = fleet(**model)
    return plan_image_model(manifest, manifest.models[0], facts)


def test_weights_are_every_component_at_16_bit(facts):
    sizes = component_bytes(facts, "bfloat16")
    assert set(sizes) == {"transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "vae"}
    assert sizes["transformer"] == 8_146_280_768 * 2
    assert sizes["text_encoder_3"] == 4_762_310_656 * 2  # T5-XXL: a third of the weights
    assert 25 * GIB < sum(sizes.values()) < 26 * GIB


def test_vae_decode_dominates_at_1024_and_guidance_doubles_the_transformer(facts):
    per_image = activation_bytes_per_image(facts, 1024, 0.0)
    assert per_image == VAE_WORKING_TENSORS * 256 * 1024 * 1024 * 2  # 256 channels upsampled to full size, bf16
    small = activation_bytes_per_image(facts, 128, 0.0)
    assert activation_bytes_per_image(facts, 128, 7.0) > small  # at 128 px the transformer dominates


def test_default_turbo_plan_fits_one_l40s_with_four_images_in_flight(facts):
    result = plan(facts, serving={"target_concurrency": 4})
    assert result.instance_type == "g6e.xlarge"
    assert result.image.offload == "none"
    assert result.image.max_batch == 4 and result.image.steps == 4 and result.image.guidance_scale == 0.0
    memory = result.memory
    assert memory.peak_bytes == memory.weights_bytes + memory.reserve_bytes + 4 * memory.activation_bytes_per_image
    assert memory.peak_bytes <= memory.usable_bytes
    assert any("not g6.xlarge" in reason for reason in result.reasons)


def test_more_images_in_flight_need_a_bigger_gpu(facts):
    small, large = plan(facts, serving={"target_concurrency": 4}), plan(facts, serving={"target_concurrency": 16})
    assert large.gpu_memory_bytes > small.gpu_memory_bytes
    assert large.memory.max_images_in_flight >= 16


def test_a_pinned_24_gib_gpu_gets_model_offload_and_says_why(facts):
    result = plan(facts, image={"max_images": 1}, serving={"instance_type": "g6.12xlarge", "target_concurrency": 1})
    assert result.image.offload == "model"
    assert result.memory.resident_weights_bytes == result.memory.weights_bytes_by_component["transformer"]
    assert any(reason.startswith("model CPU offload") for reason in result.reasons)


def test_offload_needs_the_weights_in_host_memory(facts):
    with pytest.raises(PlanError, match=r"with model CPU offload: .*needs the 25.7 GiB of weights in host memory; 16 GiB"):
        plan(facts, image={"max_images": 1}, serving={"instance_type": "g6.xlarge", "target_concurrency": 1})


def test_what_fits_nowhere_is_refused_with_the_numbers(facts):
    with pytest.raises(PlanError, match=r"model 'sd35' fits no pinned instance: .*images in flight"):
        plan(facts, serving={"instance_type": "g6e.xlarge", "target_concurrency": 64})


def test_a_plan_survives_the_container_environment_as_its_kind(facts):
    result = plan(facts)
    assert plan_from_json(result.to_json()) == result
    text_plan_json = json.loads(result.to_json())
    assert isinstance(plan_from_json(result.to_json()), ImagePlan)
    text_plan_json.pop("kind")  # a plan without `kind` is a text plan
    with pytest.raises(ValueError, match="memory|vllm"):
        plan_from_json(json.dumps(text_plan_json))


def test_plan_any_model_plans_the_kind_the_manifest_names(facts):
    manifest = fleet()
    assert isinstance(plan_any_model(manifest, manifest.models[0], facts), ImagePlan)
    assert ServingPlan.model_fields["kind"].default == "text"


def test_a_pipeline_the_planner_does_not_model_is_refused_by_name():
    with pytest.raises(ConfigError, match="FluxPipeline"):
        pipeline_facts({"_class_name": "FluxPipeline"}, {}, "local:x")


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"lora": {"max_rank": 16}}, "lora"),
        ({"reasoning_parser": "qwen3"}, "reasoning_parser"),
        ({"max_model_len": 4096}, "max_model_len"),
        ({"quantization": "fp8"}, "quantization"),
        ({"serving": {"slo_ttft_ms": 500}}, "serving.slo_ttft_ms"),
    ],
)
def test_text_only_fields_are_refused_on_an_image_model_by_name(extra, field):
    with pytest.raises(ManifestError, match=f"field '{field}' is not allowed on an image model"):
        fleet(**extra)


def test_image_settings_on_a_text_model_are_refused():
    with pytest.raises(ManifestError, match="field 'image' is for image models"):
        parse_fleet(json.dumps({"name": "d", "models": [{"name": "m", "source": "/x", "image": {}}]}))


def test_image_limits_are_checked_against_each_other():
    with pytest.raises(ManifestError, match="steps .* exceeds max_steps"):
        fleet(image={"steps": 60, "max_steps": 50})
    with pytest.raises(ManifestError, match="multiple of 16"):
        fleet(image={"max_size": 1000})


def test_verify_refuses_an_image_model_and_names_the_bench(facts):
    from llmfleet.model_store.ops.verify import check_measurable, VerifyRefused

    with pytest.raises(VerifyRefused, match="image_gpu_bench"):
        check_measurable(plan(facts))


def test_the_latency_alarm_is_in_seconds_per_batch(facts):
    result = plan(facts, serving={"target_concurrency": 4})
    assert latency_alarm_ms(result) == 2 * 4 * 4 * 4 * 1000  # 2 batches of 4 images at ~4 s, x4


def test_a_request_may_not_ask_for_more_images_than_the_plan_holds_in_flight(facts):
    with pytest.raises(PlanError, match=r"field 'image.max_images': 8 images in one request .* the 4 images in flight"):
        plan(facts, image={"max_images": 8}, serving={"target_concurrency": 4})
