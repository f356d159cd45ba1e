"""The container environment: required values, defaults, and messages that say what to fix."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from llmfleet.containers.entrypoint import settings
from llmfleet.model_store.contract import container as contract
from llmfleet.model_store.gateway import contract as gateway_contract
from llmfleet.model_store.contract.container import (
    container_env,
    DEFAULT_METRICS_SECONDS,
    DEFAULT_POLL_SECONDS,
    SAGEMAKER_MODEL_DIR,
)
from llmfleet.containers.entrypoint.settings import EntrypointError, EntrypointSettings, settings_from_env
from llmfleet.model_store.facts.architectures import read_checkpoint_architecture
from llmfleet.model_store.contract.manifest import parse_fleet
from llmfleet.model_store.contract.plan import DEFAULT_MODEL_ROOT, ServingPlan
from llmfleet.model_store.planning.text import plan_model
from llmfleet.scripts import local_fleet
from llmfleet.scripts.standin_model import entrypoint_environment

REPO = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = ("app.py", "stacks", "scripts", "containers", "model_store")
STORE = "s3://llmfleet-store/fleet"

CONFIG = {
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 128, "intermediate_size": 256,
    "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 64,
    "vocab_size": 600, "max_position_embeddings": 1024, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
}


@pytest.fixture(scope="module")
def plan_json(tmp_path_factory: pytest.TempPathFactory) -> str:
    model = tmp_path_factory.mktemp("model")
    (model / "config.json").write_text(json.dumps(CONFIG))
    fleet = parse_fleet(json.dumps({"name": "f", "models": [{"name": "m", "source": str(model), "max_model_len": 512}]}))
    return plan_model(fleet, fleet.models[0], read_checkpoint_architecture(model)).to_json()


def env(plan_json: str, **overrides: str) -> dict[str, str]:
    return {"LLMFLEET_PLAN": plan_json, "LLMFLEET_STORE": "s3://llmfleet-store/fleet", **overrides}


def test_defaults(plan_json: str):
    settings = settings_from_env(env(plan_json))

    assert settings.plan.model_name == "m"
    assert (settings.target, settings.host, settings.port) == ("ecs", "0.0.0.0", 8000)
    assert settings.local_address == "127.0.0.1"
    assert settings.model_root == DEFAULT_MODEL_ROOT
    assert settings.poll_seconds == DEFAULT_POLL_SECONDS
    assert settings.endpoint_url is None
    assert settings.server_id
    assert settings.compile_cache


def test_the_compile_cache_can_be_turned_off(plan_json: str):
    assert not settings_from_env(env(plan_json, LLMFLEET_COMPILE_CACHE="off")).compile_cache
    assert settings_from_env(container_env(ServingPlan.from_json(plan_json), STORE, "ecs", compile_cache=False)).compile_cache is False


def test_sagemaker_listens_on_8080(plan_json: str):
    assert settings_from_env(env(plan_json, LLMFLEET_TARGET="sagemaker")).port == 8080


def test_overrides(plan_json: str):
    settings = settings_from_env(
        env(plan_json, LLMFLEET_PORT="9001", LLMFLEET_HOST="127.0.0.2", LLMFLEET_SERVER_ID="s-1", LLMFLEET_POLL_SECONDS="0.5",
            LLMFLEET_MODEL_ROOT="/cache", AWS_ENDPOINT_URL="http://127.0.0.1:5000")
    )

    assert (settings.host, settings.port, settings.server_id, settings.poll_seconds) == ("127.0.0.2", 9001, "s-1", 0.5)
    assert settings.local_address == "127.0.0.2"  # the agent reaches vLLM where it listens
    assert (settings.model_root, settings.endpoint_url) == ("/cache", "http://127.0.0.1:5000")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"LLMFLEET_PLAN": ""}, "LLMFLEET_PLAN is not set"),
        ({"LLMFLEET_PLAN": "{not json"}, "LLMFLEET_PLAN is not a valid ServingPlan"),
        ({"LLMFLEET_PLAN": json.dumps({"model_name": "m"})}, "fleet: Field required"),
        ({"LLMFLEET_STORE": "/local/dir"}, "LLMFLEET_STORE='/local/dir'"),
        ({"LLMFLEET_STORE": "s3://"}, "s3://bucket"),
        ({"LLMFLEET_TARGET": "lambda"}, "allowed ['ecs', 'sagemaker']"),
        ({"LLMFLEET_COMPILE_CACHE": "yes"}, "LLMFLEET_COMPILE_CACHE='yes': allowed 'on'"),
        ({"LLMFLEET_PORT": "http"}, "LLMFLEET_PORT='http'"),
        ({"LLMFLEET_PORT": "70000"}, "1-65535"),
        ({"LLMFLEET_POLL_SECONDS": "soon"}, "not a number"),
        ({"LLMFLEET_POLL_SECONDS": "0"}, "below the minimum"),
        ({"LLMFLEET_HOST": "localhost"}, "LLMFLEET_HOST='localhost': allowed 0.0.0.0"),
        ({"LLMFLEET_HOST": "::1"}, "a loopback address 127.x.x.x"),
        # the agent calls vLLM on loopback; an interface address would leave it out
        ({"LLMFLEET_HOST": "10.0.3.7"}, "a loopback address"),
    ],
)
def test_bad_environment_is_refused_with_what_to_fix(plan_json: str, overrides: dict, message: str):
    with pytest.raises(EntrypointError, match=message.replace("[", r"\[").replace("(", r"\(")):
        settings_from_env(env(plan_json, **overrides))


def test_a_missing_store_is_refused(plan_json: str):
    with pytest.raises(EntrypointError, match="LLMFLEET_STORE"):
        settings_from_env({"LLMFLEET_PLAN": plan_json})


def test_the_plan_comes_back_whole(plan_json: str):
    assert settings_from_env(env(plan_json)).plan.to_json() == plan_json


def expected(plan: ServingPlan, target: str, **fields) -> EntrypointSettings:
    """The settings a writer means: the entrypoint's defaults, then what it sets."""
    defaults = EntrypointSettings(
        plan=plan, store_uri=STORE, endpoint_url=None, model_root=DEFAULT_MODEL_ROOT,
        preloaded_model_dir=SAGEMAKER_MODEL_DIR if target == "sagemaker" else None, target=target,
        host="0.0.0.0", port=contract.TARGET_PORTS[target], server_id="this-host",
        poll_seconds=DEFAULT_POLL_SECONDS, metrics_seconds=DEFAULT_METRICS_SECONDS, compile_cache=True,
    )
    return replace(defaults, **fields)


def read_back(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> EntrypointSettings:
    monkeypatch.setattr(settings.socket, "gethostname", lambda: "this-host")
    return settings_from_env(env)


def test_the_ecs_task_environment_reads_back(plan_json: str, monkeypatch: pytest.MonkeyPatch):
    plan = ServingPlan.from_json(plan_json)
    env = container_env(plan, STORE, "ecs", model_root=DEFAULT_MODEL_ROOT)  # as stacks/gpu_service.py writes it

    assert read_back(env, monkeypatch) == expected(plan, "ecs")


def test_the_sagemaker_model_environment_reads_back(plan_json: str, monkeypatch: pytest.MonkeyPatch):
    plan = ServingPlan.from_json(plan_json)
    env = container_env(plan, STORE, "sagemaker")  # as stacks/sagemaker_endpoint.py writes it

    assert read_back(env, monkeypatch) == expected(plan, "sagemaker")


def test_the_local_fleet_environment_reads_back(plan_json: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    plan = ServingPlan.from_json(plan_json)
    state_dir = local_fleet.StateDir(tmp_path)
    env = local_fleet.entrypoint_env(
        plan, store_uri=STORE, endpoint="http://127.0.0.1:5000", port=8123, api_key="k", state_dir=state_dir
    )

    assert read_back(env, monkeypatch) == expected(
        plan, "ecs", endpoint_url="http://127.0.0.1:5000", model_root=str(state_dir.cache), host=local_fleet.HOST,
        port=8123, server_id=local_fleet.LOCAL_SERVER_ID, poll_seconds=local_fleet.POLL_SECONDS,
    )


def test_the_stand_in_environment_reads_back(plan_json: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    plan = ServingPlan.from_json(plan_json)
    env = entrypoint_environment(
        plan, store_uri=STORE, endpoint_url=None, model_root=tmp_path, port=8124, poll_seconds=0.5, metrics_seconds=2, base={}
    )

    assert read_back(env, monkeypatch) == expected(
        plan, "ecs", model_root=str(tmp_path), port=8124, server_id="standin-0", poll_seconds=0.5, metrics_seconds=2.0
    )


def test_values_left_out_are_not_written(plan_json: str):
    env = container_env(ServingPlan.from_json(plan_json), STORE, "sagemaker")

    assert sorted(env) == sorted([contract.PLAN_ENV, contract.STORE_ENV, contract.TARGET_ENV])


def test_only_the_contract_spells_an_llmfleet_variable():
    """Writers and readers import the names from the contracts, model_store/contract/container.py (the
    serving container's) and model_store/gateway/contract.py (the gateway's); a quoted `LLMFLEET_`
    anywhere else in the source is a second spelling that can drift. Tests may spell them: they pin
    the public names."""
    contracts = {Path(module.__file__).resolve() for module in (contract, gateway_contract)}
    spelled_elsewhere = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for root in SOURCE_ROOTS
        for path in sorted([REPO / root] if root.endswith(".py") else (REPO / root).rglob("*.py"))
        if path.resolve() not in contracts
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if re.search(r"[\"']LLMFLEET_", line)
    ]

    assert spelled_elsewhere == []
