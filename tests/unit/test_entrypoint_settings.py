"""The container environment: required values, defaults, and messages that say what to fix."""

from __future__ import annotations

import json

import pytest

from containers.entrypoint.settings import DEFAULT_POLL_SECONDS, EntrypointError, settings_from_env
from model_store.architectures import read_checkpoint_architecture
from model_store.manifest import parse_fleet
from model_store.plan import DEFAULT_MODEL_ROOT, plan_model

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
