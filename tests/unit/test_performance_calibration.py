"""The performance model held to the load tests recorded on a GPU (tests/data/gpu_measurements.json,
H200, vLLM 0.26: bursts of N requests of 512 or 1,024 prompt tokens and 128 or 256 output tokens,
`concurrency` in flight). Its efficiency factors were fitted to the figures in CALIBRATED
(`python -m tests.unit.performance_fit --fit`); a change that moves a prediction beyond
TOLERANCE fails. Every recorded load is either held here or named in NOT_HELD with the reason."""

from __future__ import annotations

import pytest

from llmfleet.model_store.ops.verify import burst_figures, MeasurementLog
from tests.conftest import REPO

LOG = MeasurementLog.model_validate_json((REPO / "tests/data/gpu_measurements.json").read_text())
LOADS = {m.verdict.model: m for m in LOG.measurements if m.verdict.config == "plan" and m.verdict.load}

ALL = ("output_tokens_per_second", "ttft_p50_ms", "ttft_p95_ms", "itl_ms")
# The figures each calibrated measurement is held to (dense models, 16-bit, FP8 and int4 weights).
CALIBRATED = {
    "llama31-8b": ALL,
    "mistral-small-24b": ALL,
    "qwen3-8b-lora": ALL,
    "qwen25-vl-7b": ALL,
    "gemma2-9b": ALL,
    "qwen3-vl-4b": ALL,
    "mistral-small-24b-fp8": ALL,
    "llama31-8b-w4a16": ALL,
    # Two waves (16 requests, 8 or 128 at a time): the median TTFT is not held (see NOT_HELD).
    "exaone4-32b": ("output_tokens_per_second", "ttft_p95_ms"),
    "qwen3-8b": ("output_tokens_per_second", "ttft_p95_ms"),
    # Its decode matches reading all 8 experts, what 16 tokens routed top-2 of 8 almost always touch.
    "mixtral-8x7b": ("itl_ms",),
}
FIRST_BURST = (
    "the run's first burst also compiles kernels: 8,192 prompt tokens took {} s where dense models of "
    "the same active size took 0.2-0.7 s"
)
RANDOM_ROUTING = "vLLM ran random weights, so the router does not spread tokens as a trained one does"
NOT_HELD = {
    "qwen3-30b-a3b": f"MoE: {FIRST_BURST.format('0.9-1.7')}; {RANDOM_ROUTING}",
    "gpt-oss-20b": f"MoE: {FIRST_BURST.format('2.5-4.3')}; {RANDOM_ROUTING}",
    "deepseek-v3-5l": f"MoE: {FIRST_BURST.format('1.1')}; {RANDOM_ROUTING} (decode 2.9 ms/step, under the uniform-routing read)",
    "phi35-moe": f"MoE: {FIRST_BURST.format('2.4')}; {RANDOM_ROUTING} (decode 7.4 ms/step, under the uniform-routing read)",
    "mixtral-8x7b": f"TTFT and throughput: {FIRST_BURST.format('2.3')}",
    "nemotron-3-nano-30b": f"Mamba-2 layers' scan is not in the step model; {FIRST_BURST.format('3.3')}",
    "granite-4h-tiny": f"Mamba-2 layers' scan is not in the step model; {FIRST_BURST.format('3.8')}",
    "falcon-h1-7b": f"Mamba-2 layers' scan is not in the step model (decode 9.0 ms/step, 6.2 predicted); {FIRST_BURST.format('3.4')}",
    "deepseek-v32-5l": f"the sparse-attention indexer is not in the step model; {FIRST_BURST.format('11.5')}",
    "qwen3-next-24l": "every request of the load test failed",
    "qwen35-397b-4l": "every request of the load test failed",
    "qwen3-8b": "TTFT p50 at 128 in flight: predicted 0.5 s, measured 2.5 s (the API server's streaming at that concurrency is not modelled)",
    "exaone4-32b": "TTFT p50 over two waves of 8: predicted +27 %",
}
# Relative error allowed per figure; the errors reached are in docs/planner.md.
TOLERANCE = {"output_tokens_per_second": 0.10, "itl_ms": 0.10, "ttft_p50_ms": 0.15, "ttft_p95_ms": 0.25}

HELD = [(model, figure) for model, figures in CALIBRATED.items() for figure in figures]


def test_every_recorded_load_is_held_or_explained() -> None:
    unexplained = sorted(set(LOADS) - set(CALIBRATED) - set(NOT_HELD))
    assert not unexplained, f"classify these measurements in CALIBRATED or NOT_HELD: {unexplained}"
    partial = [m for m, figures in CALIBRATED.items() if set(figures) != set(ALL) and m not in NOT_HELD]
    assert not partial, f"say in NOT_HELD why these are held to some figures only: {partial}"


@pytest.mark.parametrize(("model", "figure"), HELD, ids=[f"{m}-{f}" for m, f in HELD])
def test_the_model_predicts_the_measured_figure(model: str, figure: str) -> None:
    predicted, measured = burst_figures(LOADS[model])[figure]
    error = predicted / measured - 1
    assert abs(error) <= TOLERANCE[figure], f"{model} {figure}: predicted {predicted:.1f}, measured {measured:.1f} ({error:+.1%})"


def test_the_mean_error_over_the_held_figures() -> None:
    """One number for the fit: the mean absolute relative error over every held figure."""
    errors = [abs(burst_figures(LOADS[m])[f][0] / burst_figures(LOADS[m])[f][1] - 1) for m, f in HELD]
    assert sum(errors) / len(errors) <= 0.06
