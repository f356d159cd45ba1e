"""The serving image is hardened in its Dockerfile: the base is pinned by digest (no default,
and a build with a tag alone stops), nothing from the user site directory is imported, and the
user's HOME is where the ECS task mounts a volume (tests/synth/test_security_image.py checks
the task side)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "containers" / "vllm" / "Dockerfile"
DIGEST = "sha256:" + "ab12" * 16


@pytest.fixture(scope="module")
def parsed() -> DockerfileParser:
    return DockerfileParser(fileobj=DOCKERFILE.open("rb"))


def instructions(parsed: DockerfileParser, name: str) -> list[str]:
    return [item["value"] for item in parsed.structure if item["instruction"] == name]


def digest_check(parsed: DockerfileParser) -> str:
    """The RUN that checks the base reference (the shell command, as Docker runs it)."""
    (check,) = [run for run in instructions(parsed, "RUN") if "VLLM_IMAGE" in run]
    return check


def test_the_base_has_no_default_and_is_checked_before_anything_else(parsed: DockerfileParser) -> None:
    steps = [(item["instruction"], item["value"]) for item in parsed.structure if item["instruction"] != "COMMENT"]
    # ARG before FROM without "=": a build without --build-arg VLLM_IMAGE has no base to pull.
    assert steps[:4] == [
        ("ARG", "VLLM_IMAGE"),
        ("FROM", "${VLLM_IMAGE}"),
        ("ARG", "VLLM_IMAGE"),  # visible to the RUN below
        ("RUN", digest_check(parsed)),
    ]


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")
@pytest.mark.parametrize(
    ("reference", "builds"),
    [
        (f"vllm/vllm-openai:v0.32.0@{DIGEST}", True),
        (f"registry.example.com/mirror/vllm-openai:v0.32.0@{DIGEST}", True),
        ("vllm/vllm-openai:v0.32.0", False),
        ("vllm/vllm-openai:latest", False),
        ("vllm/vllm-openai@sha256:abc", False),
        (f"vllm/vllm-openai:v0.32.0@{DIGEST}x", False),
        ("", False),
    ],
)
def test_a_base_without_a_digest_stops_the_build(parsed: DockerfileParser, reference: str, builds: bool) -> None:
    # Docker runs RUN with `/bin/sh -c` and the ARG in the environment.
    result = subprocess.run(
        ["sh", "-c", digest_check(parsed)], env={"VLLM_IMAGE": reference, "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    assert (result.returncode == 0) == builds, (reference, result.stderr)
    if not builds:
        assert f"VLLM_IMAGE={reference}: pin the base by digest" in result.stderr


def test_no_user_site_packages_and_home_is_the_users(parsed: DockerfileParser) -> None:
    assert parsed.envs["PYTHONNOUSERSITE"] == "1"
    (useradd,) = [run for run in instructions(parsed, "RUN") if "useradd" in run]
    home = re.search(r"--home-dir (\S+)", useradd).group(1)
    assert parsed.envs["HOME"] == home
