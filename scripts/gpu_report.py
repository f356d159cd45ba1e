"""Render tests/data/gpu_measurements.json as the dated markdown of docs/gpu-measurements.md.

    python -m llmfleet.scripts.gpu_report tests/data/gpu_measurements.json > docs/gpu-measurements.md

"plan then" is what the planner predicted when the figure was measured; "plan now" is what
today's planner predicts for the same model and settings (the regression test's view).
"""

from __future__ import annotations

import sys
from pathlib import Path

from llmfleet.model_store.ops.verify import MeasurementLog, predicted_weights_gib, replan

INTRO = (
    "Written by `make bench-gpu` (`llmfleet verify`) from `tests/data/gpu_measurements.json`; "
    "`tests/unit/test_gpu_measurements.py` plans every row again and fails when the planner moves "
    "more than 3 % away from vLLM's own KV capacity. Random weights from each `config.json` "
    "(`--load-format dummy`, no tokenizer); the load test sends random token ids, closed loop at "
    "the model's target concurrency (short: it shows the server answers at that concurrency, "
    "first-request warm-up included, not peak throughput). 'plan then': the prediction when "
    "measured; 'plan now': today's planner.\n\n"
    "Reproduce on a host with an NVIDIA GPU and the CUDA build of vLLM: `make bench-gpu PY=python3` "
    "(or `python3 -m llmfleet.scripts verify -f examples/gpu/fleet.yaml --record tests/data/gpu_measurements.json`, "
    "`... -m qwen3-8b --compare --requests 256 --concurrency 128 --prompt-tokens 1024 --max-tokens 256`). "
    "The figures below ran one command per group of models on one H200 (vLLM 0.26.0, the newest build "
    "for that host's torch 2.11; the container pins 0.32)."
)


def _cell(value, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def _verified_rows(log: MeasurementLog) -> list[str]:
    rows = [
        "| model | family | GPU, vLLM, date | KV tokens: vLLM | plan then | plan now | vLLM / plan now | weights GiB plan now / vLLM | boot s | compile s | CUDA graphs s / GiB | out tok/s | TTFT p50 / p95 ms |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in (m for m in log.measurements if m.verdict.config == "plan"):
        v, load, now = m.verdict, m.verdict.load, replan(m)
        rows.append(
            f"| {v.model} | {now.family} | {m.gpu}, {m.vllm_version}, {m.date} | {_cell(v.measured_kv_tokens, '{:,}')} | "
            f"{v.predicted_kv_tokens:,} | {now.memory.token_capacity:,} | "
            f"{_cell(v.measured_kv_tokens and v.measured_kv_tokens / now.memory.token_capacity, '{:.3f}')} | "
            f"{predicted_weights_gib(now):.2f} / {_cell(v.measured_weights_gib, '{:.2f}')} | {_cell(v.boot_seconds, '{:.0f}')} | "
            f"{_cell(v.boot.compile_seconds, '{:.0f}')} | {_cell(v.boot.graph_capture_seconds, '{:.0f}')} / "
            f"{_cell(v.boot.graph_gib, '{:.2f}')} | {_cell(load and load.output_tokens_per_second, '{:,.0f}')} | "
            f"{_cell(load and load.ttft_p50_ms, '{:.0f}')} / {_cell(load and load.ttft_p95_ms, '{:.0f}')} |"
        )
    plans = [m for m in log.measurements if m.verdict.config == "plan"]
    notes = [f"- {m.verdict.model}: {m.verdict.note}." for m in plans if m.verdict.boot_seconds is None or m.verdict.load is None]
    notes += [
        f"- {m.verdict.model}: vLLM also took `{' '.join(m.host_vllm_args)}`, for the GPU host's vLLM build (not the plan's)."
        for m in plans
        if m.host_vllm_args
    ]
    return rows + ([""] + notes if notes else [])


def _compare_rows(log: MeasurementLog) -> list[str]:
    rows = []
    for model in sorted({m.verdict.model for m in log.measurements if m.verdict.config != "plan"}):
        runs = {m.verdict.config: m.verdict for m in log.measurements if m.verdict.model == model}
        base = runs.get("plan")
        base_speed = base.load.output_tokens_per_second if base and base.load else None
        rows += [
            "",
            f"## `verify --compare`: {model}",
            "",
            "| settings | out tok/s | plan's tok/s ÷ this | TTFT p50 / p95 ms | KV tokens | boot s |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for config in ("plan", "vllm-defaults", "seed-notebook"):
            v = runs.get(config)
            if v is None:
                continue
            speed = v.load.output_tokens_per_second if v.load else None
            ratio = f"{base_speed / speed:.2f}" if speed and base_speed else "-"
            rows.append(
                f"| {config} | {_cell(speed, '{:,.0f}')} | {ratio} | {_cell(v.load and v.load.ttft_p50_ms, '{:.0f}')} / "
                f"{_cell(v.load and v.load.ttft_p95_ms, '{:.0f}')} | {_cell(v.measured_kv_tokens, '{:,}')} | {_cell(v.boot_seconds, '{:.0f}')} |"
            )
        if base and base.load:
            rows.append(
                f"\nOne run each. Workload: {base.load.requests} requests of {base.load.prompt_tokens} random prompt "
                f"tokens and {base.load.output_tokens_per_request} output tokens, {base.load.concurrency} in flight, "
                "through the OpenAI server (the plan's run also passes the entrypoint's ASGI middleware)."
            )
    return rows


def render(log: MeasurementLog) -> str:
    lines = ["# The planner against vLLM on a GPU", "", INTRO, ""]
    lines += _verified_rows(log) + _compare_rows(log)
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    path = Path(argv[1] if len(argv) > 1 else "tests/data/gpu_measurements.json")
    sys.stdout.write(render(MeasurementLog.model_validate_json(path.read_text())))


if __name__ == "__main__":
    main(sys.argv)
