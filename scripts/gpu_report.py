"""Render tests/data/gpu_measurements.json as the dated markdown table of docs/gpu-measurements.md.

    python -m scripts.gpu_report tests/data/gpu_measurements.json > docs/gpu-measurements.md
"""

from __future__ import annotations

import sys
from pathlib import Path

from model_store.verify import Measurement, MeasurementLog


def _cell(value, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def _family(m: Measurement) -> str:
    from model_store.families import facts_from_config

    return facts_from_config(m.config).family


def render(log: MeasurementLog) -> str:
    plans = [m for m in log.measurements if m.verdict.config == "plan"]
    lines = [
        "# The planner against vLLM on a GPU",
        "",
        "Written by `make bench-gpu` (`llmfleet verify`) from `tests/data/gpu_measurements.json`; "
        "`tests/unit/test_gpu_measurements.py` re-plans every row and fails when the planner moves "
        "more than 3 % away from vLLM's own KV capacity. Random weights from each `config.json` "
        "(`--load-format dummy`); the load test is random token ids, closed loop at the model's "
        "target concurrency.",
        "",
        "| model | family | GPU | vLLM | date | KV tokens plan | vLLM | vLLM / plan | weights GiB plan | vLLM | boot s | compile s | out tok/s | TTFT p50 / p95 ms |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in plans:
        v, load = m.verdict, m.verdict.load
        lines.append(
            f"| {v.model} | {_family(m)} | {m.gpu} | {m.vllm_version} | {m.date} | {v.predicted_kv_tokens:,} | "
            f"{_cell(v.measured_kv_tokens, '{:,}')} | {_cell(v.kv_ratio, '{:.3f}')} | {v.predicted_weights_gib:.2f} | "
            f"{_cell(v.measured_weights_gib, '{:.2f}')} | {_cell(v.boot_seconds, '{:.0f}')} | "
            f"{_cell(v.boot.compile_seconds, '{:.0f}')} | {_cell(load and load.output_tokens_per_second, '{:,.0f}')} | "
            f"{_cell(load and load.ttft_p50_ms, '{:.0f}')} / {_cell(load and load.ttft_p95_ms, '{:.0f}')} |"
        )
    compared = sorted({m.verdict.model for m in log.measurements if m.verdict.config != "plan"})
    for model in compared:
        runs = {m.verdict.config: m for m in log.measurements if m.verdict.model == model}
        base = runs.get("plan")
        lines += [
            "",
            f"## `verify --compare`: {model}",
            "",
            "| settings | out tok/s | vs plan | TTFT p50 / p95 ms | KV tokens | boot s |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for config in ("plan", "vllm-defaults", "seed-notebook"):
            if config not in runs:
                continue
            v, load = runs[config].verdict, runs[config].verdict.load
            speed = load.output_tokens_per_second if load else None
            base_speed = base.verdict.load.output_tokens_per_second if base and base.verdict.load else None
            ratio = f"{base_speed / speed:.2f}x" if speed and base_speed and config != "plan" else "-"
            lines.append(
                f"| {config} | {_cell(speed, '{:,.0f}')} | plan {ratio} | {_cell(load and load.ttft_p50_ms, '{:.0f}')} / "
                f"{_cell(load and load.ttft_p95_ms, '{:.0f}')} | {_cell(v.measured_kv_tokens, '{:,}')} | {_cell(v.boot_seconds, '{:.0f}')} |"
            )
        if base and base.verdict.load:
            load = base.verdict.load
            lines.append(
                f"\nWorkload: {load.requests} requests of {load.prompt_tokens} random prompt tokens and "
                f"{load.output_tokens_per_request} output tokens, {load.concurrency} in flight."
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    path = Path(argv[1] if len(argv) > 1 else "tests/data/gpu_measurements.json")
    sys.stdout.write(render(MeasurementLog.model_validate_json(path.read_text())))


if __name__ == "__main__":
    main(sys.argv)
