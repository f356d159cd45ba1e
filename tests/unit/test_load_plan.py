"""Planning for a load: the manifest's `load:` section, the cheapest fleet predicted to meet its SLO,
and the properties a buyer relies on (more load never buys less; a looser SLO never costs more)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmfleet.model_store.planning import performance
from llmfleet.model_store.facts.architectures import known_architecture
from llmfleet.model_store.planning.catalog import instance
from llmfleet.model_store.contract.manifest import FleetManifest, ManifestError, parse_fleet
from llmfleet.model_store.contract.plan import ServingPlan
from llmfleet.model_store.planning.fit import PlanError
from llmfleet.model_store.planning.text import plan_model

LLAMA = known_architecture("meta-llama/Llama-3.1-8B-Instruct")
SMALL_CATALOG = tuple(instance(name) for name in ("g6.xlarge", "g6e.xlarge", "g6e.12xlarge", "p5.4xlarge"))


def _load(**overrides) -> dict:
    return {
        "requests_per_second": 5,
        "prompt_tokens": {"p50": 1000, "p95": 3000},
        "output_tokens": {"p50": 200, "p95": 500},
        "slo": {"ttft_ms": 2000, "itl_ms": 50, "percentile": 95},
    } | overrides


def _fleet(load: dict | None = None, **model) -> FleetManifest:
    entry = {"name": "m", "source": "s3://llmfleet-store/models/m", "max_model_len": 8192, **model}
    if load is not None:
        entry["load"] = load
    return FleetManifest.model_validate({"name": "f", "models": [entry]})


def _plan(load: dict, catalog=SMALL_CATALOG, **model):
    fleet = _fleet(load, **model)
    return plan_model(fleet, fleet.models[0], LLAMA, catalog=catalog)


def _fleet_cost(plan) -> float:
    return plan.performance.replicas * plan.cost_per_hour_usd


# --- the manifest ----------------------------------------------------------------------


def _error(load: dict, **model) -> str:
    models = [{"name": "m", "source": "/ckpt", "max_model_len": 8192, "load": load, **model}]
    document = {"name": "f", "models": models}
    import yaml

    with pytest.raises(ManifestError) as raised:
        parse_fleet(yaml.safe_dump(document))
    return str(raised.value)


def test_a_load_section_is_read() -> None:
    spec = _fleet(_load()).models[0]
    assert spec.load.requests_per_second == 5 and spec.load.prompt_tokens.p95 == 3000 and spec.load.slo.percentile == 95


@pytest.mark.parametrize(
    ("load", "model", "message"),
    [
        (_load(concurrency=8), {}, "give exactly one of 'requests_per_second' (open loop) and 'concurrency'"),
        ({k: v for k, v in _load().items() if k != "requests_per_second"}, {}, "give exactly one of"),
        (_load(prompt_tokens={"p50": 900, "p95": 800}), {}, "field 'load.prompt_tokens': p95 (800) is below p50 (900); allowed: p95 >= p50"),
        (_load(slo={"ttft_ms": 500, "itl_ms": 30, "percentile": 97}), {}, "field 'load.slo.percentile': percentile 97 is not one of [50, 90, 95, 99]"),
        (_load(requests_per_second=-1), {}, "field 'load.requests_per_second': Input should be greater than 0 (got -1)"),
        (_load(output_tokens={"p50": 100, "p95": 6000}), {}, "p95 prompt + p95 output = 9000 tokens exceeds max_model_len 8192"),
        (_load(), {"serving": {"target_concurrency": 4}}, "field 'serving.target_concurrency' and field 'load' both size the fleet"),
        (_load(), {"serving": {"slo_ttft_ms": 400}}, "field 'serving.slo_ttft_ms' and field 'load' both size the fleet: keep 'load' (load.slo.ttft_ms replaces it)"),
    ],
)
def test_a_bad_load_is_refused_naming_field_value_and_what_is_allowed(load: dict, model: dict, message: str) -> None:
    assert message in _error(load, **model)


# --- the planner -------------------------------------------------------------------------


def test_a_model_without_a_load_plans_as_before() -> None:
    """target_concurrency stays the shorthand: no predictions, and the plan's JSON has no new key."""
    fleet = _fleet(None, serving={"target_concurrency": 4})
    plan = plan_model(fleet, fleet.models[0], LLAMA)
    assert plan.performance is None and '"performance"' not in plan.to_json()


def test_the_cheapest_fleet_that_meets_the_slo_is_chosen_and_explained() -> None:
    plan = _plan(_load())
    p = plan.performance
    assert p.ttft_ms <= 2000 and p.itl_ms <= 50
    assert p.replicas * p.max_requests_per_second_per_server >= 5
    assert p.output_tokens_per_second == pytest.approx(5 * 200)
    assert p.usd_per_million_output_tokens == pytest.approx(_fleet_cost(plan) / (p.output_tokens_per_second * 3600) * 1e6, rel=1e-3)
    assert p.uncertainty == performance.UNMEASURED_GPU_UNCERTAINTY  # none of SMALL_CATALOG is an H200
    joined = "\n".join(plan.reasons)
    assert f"{p.replicas} x {plan.instance_type}" in joined and "per million output tokens" in joined
    assert p.runner_up and f"runner-up {p.runner_up}" in joined
    assert plan.autoscaling.max_capacity >= p.replicas
    assert plan.autoscaling.target_requests_per_minute == math.floor(p.max_requests_per_second_per_server * 60)


def test_every_cheaper_fleet_misses_the_slo() -> None:
    """Pinned to each other instance type, the plan costs at least as much or cannot meet the SLO."""
    chosen = _plan(_load())
    for other in SMALL_CATALOG:
        try:
            pinned = _plan(_load(), serving={"instance_type": other.name})
        except PlanError:
            continue
        assert _fleet_cost(pinned) >= _fleet_cost(chosen) - 1e-9


def test_the_predictions_travel_with_the_plan() -> None:
    plan = _plan(_load())
    assert ServingPlan.from_json(plan.to_json()) == plan
    assert json.loads(plan.to_json())["performance"]["replicas"] == plan.performance.replicas


@pytest.mark.parametrize("rate", [1, 5, 40])
def test_max_num_seqs_holds_the_servers_scaling_target(rate: float) -> None:
    """Autoscaling lets a server take up to its requests/min target before another starts: its
    max_num_seqs holds twice the sequences the model predicts decoding at that rate."""
    from llmfleet.model_store.planning.load_plan import lengths, step_cost_of

    fleet = _fleet(_load(requests_per_second=rate))
    plan = plan_model(fleet, fleet.models[0], LLAMA, catalog=SMALL_CATALOG)
    gpus = instance(plan.instance_type)
    cost = step_cost_of(fleet.models[0], LLAMA, plan.vllm.dtype, None, plan.memory, gpus, plan.tensor_parallel_size)
    vllm = plan.vllm
    batching = performance.Batching(vllm.max_num_seqs, vllm.max_num_batched_tokens, plan.memory.token_capacity)
    target = plan.performance.max_requests_per_second_per_server
    at_target = performance.predict(cost, batching, target, *lengths(fleet.models[0].load), 95)
    assert at_target is not None and 2 * at_target.running <= plan.vllm.max_num_seqs
    assert "scaling target" in " ".join(plan.reasons)


def test_an_slo_no_fleet_meets_is_refused_with_what_one_request_gets() -> None:
    with pytest.raises(PlanError, match=r"no fleet of up to 100 servers .* even a lone request gets"):
        _plan(_load(slo={"ttft_ms": 2000, "itl_ms": 0.5}))


def test_a_concurrency_load_is_planned_by_littles_law() -> None:
    plan = _plan({k: v for k, v in _load().items() if k != "requests_per_second"} | {"concurrency": 32})
    p = plan.performance
    assert p.concurrency == pytest.approx(32, rel=0.01)
    assert p.requests_per_second > 0 and p.ttft_ms <= 2000 and p.itl_ms <= 50


@settings(max_examples=15, deadline=None)
@given(rate=st.floats(0.2, 40), factor=st.floats(1.0, 3.0))
def test_more_load_never_lowers_the_chosen_capacity(rate: float, factor: float) -> None:
    light, heavy = _plan(_load(requests_per_second=rate)), _plan(_load(requests_per_second=rate * factor))
    assert _fleet_cost(heavy) >= _fleet_cost(light) - 1e-9


@settings(max_examples=15, deadline=None)
@given(ttft=st.integers(300, 5000), itl=st.floats(8, 100), looser=st.floats(1.0, 3.0), rate=st.floats(0.5, 20))
def test_a_looser_slo_never_costs_more(ttft: int, itl: float, looser: float, rate: float) -> None:
    def cost(ttft_ms: int, itl_ms: float) -> float:
        try:
            return _fleet_cost(_plan(_load(requests_per_second=rate, slo={"ttft_ms": ttft_ms, "itl_ms": itl_ms})))
        except PlanError:
            return math.inf

    assert cost(int(ttft * looser), itl * looser) <= cost(ttft, itl)


@settings(max_examples=10, deadline=None)
@given(concurrency=st.integers(1, 200), factor=st.floats(1.0, 3.0))
def test_more_requests_in_flight_never_lower_the_chosen_capacity(concurrency: int, factor: float) -> None:
    closed = {k: v for k, v in _load().items() if k != "requests_per_second"}
    light = _plan(closed | {"concurrency": concurrency})
    heavy = _plan(closed | {"concurrency": math.ceil(concurrency * factor)})
    assert _fleet_cost(heavy) >= _fleet_cost(light) - 1e-9
