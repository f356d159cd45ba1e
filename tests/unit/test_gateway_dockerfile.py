"""The gateway image's Dockerfile and lock, checked without a Docker engine: a digest-pinned base,
every package hash-locked, a non-root user, and an entrypoint module that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from llmfleet.model_store.gateway.contract import GATEWAY_BASE_IMAGE_ARG, GATEWAY_DOCKERFILE, GATEWAY_PORT

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements" / "gateway-lock.txt"


@pytest.fixture(scope="module")
def parsed() -> DockerfileParser:
    return DockerfileParser(fileobj=(REPO / GATEWAY_DOCKERFILE).open("rb"))


def values(parsed: DockerfileParser, name: str) -> list[str]:
    return [item["value"] for item in parsed.structure if item["instruction"] == name]


def test_base_is_an_argument_checked_for_a_digest(parsed) -> None:
    assert values(parsed, "FROM") == [f"${{{GATEWAY_BASE_IMAGE_ARG}}}"]
    check = next(v for v in values(parsed, "RUN") if "sha256" in v)
    assert "@sha256:[0-9a-f]{64}$" in check and "exit 1" in check


def test_packages_come_from_the_hash_lock_only(parsed) -> None:
    install = next(v for v in values(parsed, "RUN") if "pip install" in v)
    assert "--require-hashes" in install and "gateway-lock.txt" in install
    entries = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\\n    --hash=sha256:([0-9a-f]{64})$", LOCK.read_text(), re.M)
    pins = [line for line in LOCK.read_text().splitlines() if "==" in line and not line.startswith("#")]
    assert len(entries) == len(pins) > 100
    assert ("litellm", "1.108.7") in {(name, version) for name, version, _ in entries}


def test_runs_unprivileged_on_the_contract_port(parsed) -> None:
    assert values(parsed, "USER") == ["10001"]
    assert values(parsed, "EXPOSE") == [str(GATEWAY_PORT)]
    assert values(parsed, "ENTRYPOINT") == ['["python3", "-m", "llmfleet.containers.gateway"]']
    copied = [v.split()[0] for v in values(parsed, "COPY")]
    for source in copied[1:]:
        assert (REPO / source).exists(), source
    assert (REPO / "containers" / "gateway" / "__main__.py").is_file()
