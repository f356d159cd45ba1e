"""The performance model against the open-loop loads measured on an H200 (`llmfleet verify --load`,
vLLM 0.26, `vllm bench serve`; tests/data/gpu_load_measurements.json): each recorded check is
predicted again from its record (the server's flags, the KV cache vLLM logged, the point's rate)
and held to what vLLM measured. Figures the model does not hold are named with the reason, so a
new record must be classified. docs/planner.md shows the table."""

from __future__ import annotations

import pytest

from llmfleet.model_store.ops import load_verify
from tests.conftest import REPO

LOG = load_verify.LoadLog.model_validate_json((REPO / "tests/data/gpu_load_measurements.json").read_text())
# Relative error allowed per figure; the errors reached are in docs/planner.md.
TOLERANCE = {"output_tokens_per_second": 0.10, "itl_mean_ms": 0.12, "ttft_p95_ms": 0.25, "itl_p95_ms": 0.15}
NOT_HELD = {
    # The 49 ms per request fitted on closed-loop bursts (16 requests at once through one client) is
    # ~30 ms more than an open loop of spread arrivals pays: the median TTFT is predicted 34-54 % high.
    "ttft_p50_ms": "per-request overhead fitted on bursts",
}
# At the scaling target about 5 % of steps carry a prompt chunk: the 95th percentile token gap sits
# on the edge between a pure decode step (predicted) and a step carrying a short prompt (measured).
ITL_P95_NOT_HELD_AT = {"max-within-slo"}


def _key(m: load_verify.LoadMeasurement) -> str:
    c = m.check
    return f"{c.model}/{c.flags.config}/{c.point.name}/{c.repeat}"


CASES = [
    (m, figure)
    for m in LOG.measurements
    for figure in load_verify.FIGURES
    if figure not in NOT_HELD and not (figure == "itl_p95_ms" and m.check.point.name in ITL_P95_NOT_HELD_AT)
]


def test_the_record_covers_dense_bf16_and_fp8_and_vllms_defaults() -> None:
    checks = [m.check for m in LOG.measurements]
    assert {c.model for c in checks} >= {"qwen3-8b", "mistral-small-24b-fp8"}
    assert {c.flags.config for c in checks} >= {"plan", "vllm-defaults"}
    assert all(c.measured.failed == 0 and c.measured.requests >= 40 for c in checks)


@pytest.mark.parametrize(("measurement", "figure"), CASES, ids=[f"{_key(m)}:{f}" for m, f in CASES])
def test_the_prediction_holds_the_measured_load(measurement: load_verify.LoadMeasurement, figure: str) -> None:
    predicted, measured = load_verify.compared(measurement)[figure]
    assert predicted is not None, f"{_key(measurement)}: predicted saturated where vLLM served"
    assert predicted / measured - 1 == pytest.approx(0, abs=TOLERANCE[figure])


def test_what_is_not_held_is_still_off_as_stated() -> None:
    """The named misses are what the docs say: TTFT p50 high by a per-request overhead, ITL p95 low at
    the scaling target. Should the model come to hold them, they move to the held cases."""
    for m in LOG.measurements:
        figures = load_verify.compared(m)
        predicted, measured = figures["ttft_p50_ms"]
        assert 0 < predicted - measured < 0.035 * 1000
        if m.check.point.name in ITL_P95_NOT_HELD_AT:
            predicted, measured = figures["itl_p95_ms"]
            assert predicted < measured


def test_the_plans_flags_serve_at_least_the_goodput_of_vllms_defaults() -> None:
    """Goodput (requests/s within the SLO) of the plan's flags and vLLM's serve defaults, same load:
    at both points every request met the SLO under either, so they tie (within 0.1 %)."""
    ranks = load_verify.sweep_ranks([m.check for m in LOG.measurements if m.check.model == "qwen3-8b"])
    assert {r.point for r in ranks} == {"planned", "max-within-slo"}
    for rank in ranks:
        assert rank.plan_share_of_best >= 0.999
