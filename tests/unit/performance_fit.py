"""Fit the performance model's efficiency factors to the recorded GPU load tests, or print its error.

`python -m tests.unit.performance_fit` prints, for every recorded load test, each figure
predicted and measured (a Markdown table, as docs/planner.md shows it); `--fit` first searches the
factors (coordinate descent on the squared log error of the figures tests/unit/
test_performance_calibration.py holds, bandwidth efficiency at most 0.95) and prints them to paste
into model_store/planning/performance.py. No GPU needed: the measurements carry the GPU's answers.
"""

from __future__ import annotations

import math
import sys

from llmfleet.model_store.planning import performance
from llmfleet.model_store.ops.verify import burst_figures, MeasurementLog
from tests.conftest import REPO
from tests.unit.test_performance_calibration import HELD, LOADS

FACTORS = ("BANDWIDTH_EFFICIENCY", "COMPUTE_EFFICIENCY", "STEP_OVERHEAD_SECONDS", "LAYER_OVERHEAD_SECONDS", "REQUEST_OVERHEAD_SECONDS")
READ_FACTORS = tuple(performance.QUANTIZED_READ_FACTOR)
SHORT = {"output_tokens_per_second": "tok/s", "ttft_p50_ms": "TTFT p50 ms", "ttft_p95_ms": "TTFT p95 ms", "itl_ms": "ITL ms"}


def squared_log_error() -> float:
    total = 0.0
    for model, figure in HELD:
        predicted, measured = burst_figures(LOADS[model])[figure]
        total += math.log(predicted / measured) ** 2
    return total


def _get(name: str) -> float:
    return performance.QUANTIZED_READ_FACTOR[name] if name in READ_FACTORS else getattr(performance, name)


def _set(name: str, value: float) -> None:
    if name in READ_FACTORS:
        performance.QUANTIZED_READ_FACTOR[name] = value
    else:
        setattr(performance, name, value)


def fit() -> dict[str, float]:
    """Multiply one factor at a time by shrinking steps while the error falls."""
    best = squared_log_error()
    for step in (1.3, 1.1, 1.03, 1.01):
        improved = True
        while improved:
            improved = False
            for name in FACTORS + READ_FACTORS:
                for factor in (step, 1 / step):
                    old = _get(name)
                    if name == "BANDWIDTH_EFFICIENCY" and old * factor > 0.95:
                        continue
                    _set(name, old * factor)
                    error = squared_log_error()
                    if error < best - 1e-12:
                        best, improved = error, True
                    else:
                        _set(name, old)
    print(f"squared log error {best:.4f} over {len(HELD)} figures")
    return {name: _get(name) for name in FACTORS + READ_FACTORS}


def table() -> str:
    held = set(HELD)
    rows = ["| model | " + " | ".join(f"{label} predicted / measured" for label in SHORT.values()) + " |", "|---" * 5 + "|"]
    log = MeasurementLog.model_validate_json((REPO / "tests/data/gpu_measurements.json").read_text())
    for m in log.measurements:
        if m.verdict.config != "plan" or not m.verdict.load or m.verdict.load.failed:
            continue
        figures = burst_figures(m)
        cells = []
        for key in SHORT:
            if key not in figures:
                cells.append("-")
                continue
            predicted, measured = figures[key]
            mark = "" if (m.verdict.model, key) in held else " (not held)"
            cells.append(f"{predicted:,.1f} / {measured:,.1f} ({predicted / measured - 1:+.0%}){mark}")
        rows.append(f"| {m.verdict.model} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    if "--fit" in sys.argv:
        for name, value in fit().items():
            print(f"{name} = {value:.6g}")
    print(table())
