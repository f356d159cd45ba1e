"""The fleet's stacks carry the tags `llmfleet status --aws` finds a model's resources by."""

from __future__ import annotations

from llmfleet.model_store.ops.status import TAG_FLEET, TAG_MODEL, TAG_STAGE
from tests.synth.conftest import Synthesized

# What status looks up by tag (model_store/ops/aws_status.py: aws_status_rows, _healthy_targets).
FOUND_BY_TAG = {
    "ecs": ("AWS::ECS::Service", "AWS::ElasticLoadBalancingV2::TargetGroup"),
    "sagemaker": ("AWS::SageMaker::Endpoint",),
}


def tags_of(resource: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource["Properties"].get("Tags", [])}


def test_services_target_groups_and_endpoints_are_tagged_with_model_and_stage(secure_fleet: Synthesized) -> None:
    for plan in secure_fleet.fleet.plans:
        synthesized = secure_fleet.model_template(plan.model_name)
        for target in plan.targets:
            for resource_type in FOUND_BY_TAG[target]:
                resources = synthesized.find_resources(resource_type)
                assert resources, (plan.model_name, resource_type)
                for resource in resources.values():
                    tags = tags_of(resource)
                    assert tags[TAG_MODEL] == plan.model_name, (plan.model_name, resource_type, tags)
                    assert tags[TAG_STAGE] == plan.stage, (plan.model_name, resource_type, tags)
                    assert tags[TAG_FLEET] == plan.fleet, (plan.model_name, resource_type, tags)


def test_ecs_tasks_inherit_the_services_tags(secure_fleet: Synthesized) -> None:
    for plan in secure_fleet.fleet.plans:
        for service in secure_fleet.model_template(plan.model_name).find_resources("AWS::ECS::Service").values():
            assert service["Properties"]["PropagateTags"] == "SERVICE", plan.model_name


def test_stacks_carry_fleet_and_stage_tags_and_only_model_stacks_a_model_tag(secure_fleet: Synthesized) -> None:
    fleet = secure_fleet.fleet
    for stack in fleet.stacks:
        tags = stack.tags.tag_values()
        assert tags[TAG_FLEET] == fleet.manifest.name and tags[TAG_STAGE] == fleet.plans[0].stage, stack.stack_name
        assert (TAG_MODEL in tags) == (stack in fleet.models.values()), stack.stack_name
