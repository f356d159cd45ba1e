"""The per-client rate limit derived from a plan."""

from __future__ import annotations

from llmfleet.model_store.planning.edge import client_rate_limit, gateway_client_rate_limit, MIN_RATE_LIMIT
from llmfleet.model_store.gateway.contract import gateway_sizing, REQUESTS_PER_SECOND_PER_TASK
from llmfleet.model_store.planning.fleet import load_and_plan
from llmfleet.model_store.planning.lifecycle import ASSUMED_REQUEST_SECONDS
from tests.conftest import REPO


def test_limit_is_the_rate_that_fills_every_slot_of_the_scaled_out_model() -> None:
    plan = next(p for p in load_and_plan(REPO / "fleet.yaml")[1] if "ecs" in p.targets)
    slots = plan.autoscaling.max_capacity * plan.vllm.max_num_seqs
    assert client_rate_limit(plan, window_seconds=60) == -(-slots * 60 // ASSUMED_REQUEST_SECONDS)
    # Twice the servers, twice the limit; a longer window counts proportionally more.
    wider = plan.model_copy(update={"autoscaling": plan.autoscaling.model_copy(update={"max_capacity": 2 * plan.autoscaling.max_capacity})})
    assert client_rate_limit(wider) == 2 * client_rate_limit(plan)
    assert client_rate_limit(plan, window_seconds=300) == 5 * client_rate_limit(plan, window_seconds=60)


def test_limit_never_goes_below_what_waf_accepts() -> None:
    plan = load_and_plan(REPO / "fleet.yaml")[1][0]
    tiny = plan.model_copy(
        update={
            "vllm": plan.vllm.model_copy(update={"max_num_seqs": 1}),
            "autoscaling": plan.autoscaling.model_copy(update={"max_capacity": 1}),
        }
    )
    assert client_rate_limit(tiny) == MIN_RATE_LIMIT


def test_gateway_limit_is_the_rate_that_fills_every_gateway_task_at_full_scale_out() -> None:
    sizing = gateway_sizing(peak_requests_per_second=300)
    per_task_minute = REQUESTS_PER_SECOND_PER_TASK * 60
    assert gateway_client_rate_limit(sizing) == sizing.max_tasks * per_task_minute
    bigger = sizing.model_copy(update={"max_tasks": 2 * sizing.max_tasks})
    assert gateway_client_rate_limit(bigger) == 2 * gateway_client_rate_limit(sizing)
    assert gateway_client_rate_limit(sizing.model_copy(update={"max_tasks": 0})) == MIN_RATE_LIMIT
