"""Every vLLM argv the planner and the entrypoint produce for the example fleet is accepted by
vLLM's own argument parser (the installed vLLM, the version the image pins); a flag vLLM
does not know fails.

vLLM's parser takes seconds to import: it is imported once per module."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmfleet.containers.entrypoint.routing import lora_name
from llmfleet.containers.entrypoint.vllm_command import ArgvRejected, import_vllm_parser, serve_argv, serve_environment, validate_argv
from llmfleet.model_store.contract.container import PLAN_ENV, STATE_DIR_ENV
from llmfleet.model_store.planning.fleet import load_fleet_and_lock, plan_with_lock
from llmfleet.model_store.contract.plan import ServingPlan, vllm_argv
from llmfleet.model_store.planning.standin import standin_plan

REPO = Path(__file__).resolve().parents[2]
FLEET, LOCK = load_fleet_and_lock(REPO / "fleet.yaml")
PLANS = plan_with_lock(FLEET, LOCK)
CACHE = "/var/lib/llmfleet/models"


@pytest.fixture(scope="module", autouse=True)
def vllm_parser() -> None:
    import_vllm_parser()


def _lora_modules(plan: ServingPlan) -> dict[str, str]:
    return {lora_name(ref.name, "v1"): f"{CACHE}/_adapters/{plan.model_name}/{ref.name}/v1" for ref in plan.adapters}


def test_the_example_fleet_exercises_every_argv_path():
    flags = {flag for plan in PLANS for flag in vllm_argv(plan.vllm, model="m") if flag.startswith("--")}

    assert {"--enable-lora", "--quantization", "--kv-cache-dtype", "--reasoning-parser", "--speculative-config"} <= flags
    assert any(plan.streams_weights for plan in PLANS) and any(plan.adapters for plan in PLANS)


@pytest.mark.parametrize("plan", PLANS, ids=[plan.model_name for plan in PLANS])
@pytest.mark.parametrize("port", [8000, 8080], ids=["ecs", "sagemaker"])
def test_entrypoint_argv_parses(plan: ServingPlan, port: int):
    argv = serve_argv(plan, model=plan.model_location(CACHE), port=port, lora_modules=_lora_modules(plan))

    validate_argv(argv)
    assert argv[argv.index("--port") + 1] == str(port)


@pytest.mark.parametrize("plan", PLANS, ids=[plan.model_name for plan in PLANS])
def test_planner_argv_parses(plan: ServingPlan):
    validate_argv(vllm_argv(plan.vllm, model=plan.model_location(CACHE)))


@pytest.mark.parametrize("plan", PLANS, ids=[plan.model_name for plan in PLANS])
def test_standin_argv_parses(plan: ServingPlan):
    standin = standin_plan(plan, LOCK.models[plan.model_name].model.facts())

    argv = serve_argv(standin, model="/models/standin", host="127.0.0.1", port=8000, lora_modules=_lora_modules(standin))

    validate_argv(argv)
    assert argv[argv.index("--host") + 1] == "127.0.0.1"


def test_an_unknown_flag_fails():
    argv = [*vllm_argv(PLANS[0].vllm, model="m"), "--no-such-flag", "1"]

    with pytest.raises(ArgvRejected, match="--no-such-flag"):
        validate_argv(argv)


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--quantization", "int3"], "int3"),
        (["--reasoning-parser", "no_such_parser"], "no_such_parser"),
        (["--load-format", "tarball"], "tarball"),
        (["--tensor-parallel-size", "two"], "tensor-parallel-size"),
    ],
)
def test_values_vllm_does_not_know_fail(flags: list[str], named: str):
    with pytest.raises(ArgvRejected, match=named):
        validate_argv(["--model", "m", *flags])


def test_vllm_forks_its_engine_unless_the_container_says_otherwise():
    """vLLM's CLI would spawn the engine process (a second import of vLLM); the child's environment asks for fork."""
    plan = PLANS[0]
    env = serve_environment({"PATH": "/usr/bin", "VLLM_LORA_RESOLVER_CACHE_DIR": "/x"}, state_dir="/s", plan=plan)
    assert env["VLLM_WORKER_MULTIPROC_METHOD"] == "fork"
    assert env["PATH"] == "/usr/bin" and env[STATE_DIR_ENV] == "/s" and "VLLM_LORA_RESOLVER_CACHE_DIR" not in env
    assert ServingPlan.model_validate_json(env[PLAN_ENV]) == plan, "the middleware bounds requests by the plan vLLM serves"
    chosen = serve_environment({"VLLM_WORKER_MULTIPROC_METHOD": "spawn"}, state_dir="/s", plan=plan)
    assert chosen["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"
