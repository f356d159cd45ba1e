"""The serving image and its ECS task, hardened: the image asset is built FROM the base pinned by
digest that the `vllm_image` context names (synthesis refuses a base without one), and the
container's root filesystem is read-only, with exactly the paths the container writes mounted
as volumes."""

from __future__ import annotations

import json
import re
import tempfile

import aws_cdk as cdk
import pytest
from dockerfile_parse import DockerfileParser

from llmfleet.model_store.contract.plan import DEFAULT_MODEL_ROOT
from llmfleet.stacks.config import FleetSettings, StackConfigError
from llmfleet.stacks.gpu_service import SERVING_HOME, WRITABLE_PATHS
from llmfleet.stacks.store import BASE_IMAGE_ARG, DOCKERFILE, StoreProps
from tests.conftest import REPO
from tests.synth.conftest import Synthesized, only

DIGEST = "sha256:" + "ab12" * 16


def test_the_image_asset_is_built_from_the_configured_digest(secure_fleet: Synthesized) -> None:
    base = secure_fleet.fleet.base
    (image,) = json.loads((secure_fleet.outdir / f"{base.artifact_id}.assets.json").read_text())["dockerImages"].values()
    configured = json.loads((REPO / "cdk.json").read_text())["context"]["vllm_image"]
    assert image["source"]["dockerBuildArgs"] == {BASE_IMAGE_ARG: configured}
    assert re.fullmatch(r"\S+@sha256:[0-9a-f]{64}", configured)
    # The Dockerfile takes exactly this argument for its FROM.
    parsed = DockerfileParser(fileobj=(REPO / DOCKERFILE).open("rb"))
    assert [i["value"] for i in parsed.structure if i["instruction"] == "FROM"] == [f"${{{BASE_IMAGE_ARG}}}"]


def test_the_placeholder_digest_synthesizes_with_a_warning(secure_fleet: Synthesized) -> None:
    store = secure_fleet.fleet.construct.store
    warnings = [entry.data for entry in store.node.metadata if entry.type == "aws:cdk:warning"]
    assert len(warnings) == 1 and "placeholder digest" in warnings[0] and "`cdk deploy` fails" in warnings[0], warnings


@pytest.mark.parametrize(
    "base_image",
    [None, "vllm/vllm-openai:v0.32.0", "vllm/vllm-openai:latest", "vllm/vllm-openai@sha256:abc", f"vllm/vllm-openai:v0.32.0@{DIGEST} "],
)
def test_an_image_built_from_a_base_without_a_digest_is_refused(base_image) -> None:
    with pytest.raises(StackConfigError, match=rf"StoreProps.base_image: .*pinned by digest.*but {re.escape(repr(base_image))} was given"):
        StoreProps(bucket_name="b", repo_root=REPO, base_image=base_image)
    # An image CI pushed already needs no base here.
    assert StoreProps(bucket_name="b", repo_root=REPO, image_tag="v1").base_image is None


def test_context_vllm_image_must_carry_a_digest() -> None:
    def settings(**context: str) -> FleetSettings:
        return FleetSettings.from_context(cdk.App(context=context).node)

    pinned = f"vllm/vllm-openai:v0.32.0@{DIGEST}"
    assert settings(vllm_image=pinned).vllm_image == pinned
    with pytest.raises(StackConfigError, match=r"context 'vllm_image': 'vllm/vllm-openai:v0.32.0' is not pinned by digest"):
        settings(vllm_image="vllm/vllm-openai:v0.32.0")


def test_the_task_root_filesystem_is_read_only_and_the_written_paths_are_volumes(secure_fleet: Synthesized) -> None:
    # What the container writes: the model root, the supervisor's mkdtemp state directory
    # (tempfile's default: /tmp, TMPDIR unset), and HOME's caches (the Dockerfile's ENV HOME).
    parsed = DockerfileParser(fileobj=(REPO / DOCKERFILE).open("rb"))
    assert parsed.envs["HOME"] == SERVING_HOME
    assert "TMPDIR" not in parsed.envs and tempfile.gettempdir() == "/tmp"  # noqa: S108 - the path is the point
    assert sorted(WRITABLE_PATHS.values()) == sorted([DEFAULT_MODEL_ROOT, "/tmp", SERVING_HOME])  # noqa: S108
    ecs_models = [plan.model_name for plan in secure_fleet.fleet.plans if "ecs" in plan.targets]
    assert ecs_models
    for model in ecs_models:
        task = only(secure_fleet.model_template(model).find_resources("AWS::ECS::TaskDefinition"))
        (container,) = task["ContainerDefinitions"]
        assert container["ReadonlyRootFilesystem"] is True
        mounts = {m["SourceVolume"]: m["ContainerPath"] for m in container["MountPoints"]}
        assert mounts == WRITABLE_PATHS
        assert all(m["ReadOnly"] is False for m in container["MountPoints"])
        assert container["LinuxParameters"]["SharedMemorySize"] > 0  # /dev/shm: a tmpfs of the task
        volumes = {v["Name"]: v for v in task["Volumes"]}
        assert set(volumes) == set(WRITABLE_PATHS)
        assert volumes["models"]["Host"] == {"SourcePath": DEFAULT_MODEL_ROOT}  # the instance's NVMe cache
        for name in set(WRITABLE_PATHS) - {"models"}:
            # Made for the task from the image's directory (owner and mode kept), removed when it stops.
            assert volumes[name]["DockerVolumeConfiguration"] == {"Driver": "local", "Scope": "task"}, name


def test_the_sources_that_write_name_no_other_path() -> None:
    # The entrypoint's own writes: the model root (LLMFLEET_MODEL_ROOT) and a temporary directory.
    # A new absolute path written here must become a volume of the task too.
    sources = "\n".join(p.read_text() for p in sorted((REPO / "containers" / "entrypoint").glob("*.py")))
    assert "tempfile.mkdtemp(" in sources
    assert not re.findall(r"""["'](/(?:var|opt|srv|data|root|home|etc|usr)/[^"']*)["']""", sources)
