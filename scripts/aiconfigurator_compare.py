"""NVIDIA's AIConfigurator beside this project's performance model, on the same model, GPU and load.

A development comparison, not a dependency (nor one of `make bench`'s benchmarks): AIConfigurator
(PyPI `aiconfigurator`, ~850 MB, Linux x86-64) is installed into a throwaway virtual environment
(VENV, made once, under a file lock so two runs never install at once) and asked, in one process of
that environment, for its
aggregated-serving (in-flight batching) estimate on an H200 (`h200_sxm`, its vLLM kernel data):

- for every closed-loop burst recorded in tests/data/gpu_measurements.json (the plan's flags)
  of a model it supports: its TTFT, time per output token and output tokens/s at the burst's
  concurrency and lengths, beside this model's (`verify.burst_figures`) and what vLLM measured;
- for every load plan of examples/gpu/load/fleet.yaml at each load point: its TTFT and time per
  output token at the concurrency where its request rate reaches the point's, beside this model's
  `predict` and, where tests/data/gpu_load_measurements.json has the run, what vLLM measured.

    python -m llmfleet.scripts.aiconfigurator_compare [--venv DIR]

Prints Markdown tables (docs/planner.md keeps them).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from llmfleet.model_store.ops import load_verify
from llmfleet.model_store.planning.fleet import load_fleet_and_lock, plan_with_lock
from llmfleet.model_store.ops.verify import burst_figures, MeasurementLog, replan

REPO = Path(__file__).resolve().parents[1]
VERSION = "0.12.0"
SYSTEM = "h200_sxm"
VENV = Path(tempfile.gettempdir()) / f"llmfleet-aiconfigurator-{VERSION}"
# What AIConfigurator is told of a weight or KV format (its --gemm-quant-mode, --kvcache-quant-mode).
QUANT = {"fp8": "fp8"}
# In the environment: one estimate per JSON line of stdin, one JSON line of answer each.
RUNNER = (
    """
import json, sys, logging
logging.disable(logging.WARNING)
from aiconfigurator.cli.api import cli_estimate
for line in sys.stdin:
    query = json.loads(line)
    try:
        r = cli_estimate(query.pop("model_path"), "%s", backend_name="vllm", **query)
        out = {"ttft_ms": float(r.ttft), "tpot_ms": float(r.tpot), "request_rate": float(r.raw["request_rate"]),
               "tokens_per_second": float(r.raw["tokens/s"])}
    except Exception as exc:  # an unsupported model or shape: said, not fatal
        out = {"error": f"{type(exc).__name__}: {exc}"[:200]}
    print(json.dumps(out), flush=True)
"""
    % SYSTEM
)


def ensure_venv(venv: Path) -> Path:
    """The environment's python, installing AIConfigurator first when it is not there."""
    python = venv / "bin" / "python"
    with open(str(venv) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / ".installed").is_file():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q", f"aiconfigurator=={VERSION}"], check=True)
            (venv / ".installed").write_text(VERSION)
    return python


class Estimator:
    """One long-lived process of the environment answering estimates (its kernel database loads once)."""

    def __init__(self, python: Path) -> None:
        env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
        self.process = subprocess.Popen(
            [str(python), "-c", RUNNER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.cache: dict[str, dict] = {}

    def __call__(self, **query) -> dict:
        key = json.dumps(query, sort_keys=True)
        if key not in self.cache:
            self.process.stdin.write(key + "\n")
            self.process.stdin.flush()
            self.cache[key] = json.loads(self.process.stdout.readline())
        return self.cache[key]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


# Architectures AIConfigurator 0.12 lacks, told as the one they equal for its purpose: Mistral
# (full attention, no sliding window in these configs) is Llama's layout.
SAME_AS = {"MistralForCausalLM": "LlamaForCausalLM"}
MOE_KEYS = ("num_experts", "num_local_experts", "n_routed_experts")


def model_dir(config: dict, root: Path, name: str) -> str:
    """A folder holding only `config.json` (AIConfigurator reads a local model path's config)."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    architectures = [SAME_AS.get(a, a) for a in config.get("architectures", [])]
    (folder / "config.json").write_text(json.dumps({**config, "architectures": architectures}))
    return str(folder)


def parallel(config: dict) -> dict:
    """One GPU: a MoE model's experts unsplit (AIConfigurator asks how they are split)."""
    return {"moe_tp_size": 1, "moe_ep_size": 1} if any(config.get(key) for key in MOE_KEYS) else {}


def quant_modes(plan) -> dict:
    modes = {}
    if plan.vllm.quantization in QUANT:
        modes["gemm_quant_mode"] = QUANT[plan.vllm.quantization]
    if plan.vllm.kv_cache_dtype.startswith("fp8"):
        modes["kvcache_quant_mode"] = "fp8"
    return modes


def _pct(predicted: float | None, measured: float | None) -> str:
    if predicted is None:
        return "-"
    if measured is None:
        return f"{predicted:,.1f}"
    return f"{predicted:,.1f} ({predicted / measured - 1:+.0%})"


def _triple(aic: float | None, ours: float | None, measured: float | None) -> str:
    """AIConfigurator / ours (each with its error) / measured."""
    shown = "-" if measured is None else f"{measured:,.1f}"
    return f"{_pct(aic, measured)} / {_pct(ours, measured)} / {shown}"


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def bursts(estimate: Estimator, root: Path) -> list[str]:
    """The recorded closed-loop bursts: AIConfigurator, ours and vLLM's measurement."""
    rows = [
        _row("model", "burst", *(f"{f}: AIC / ours / measured" for f in ("output tok/s", "TTFT p50 ms", "ITL ms"))),
        "|---|---|---|---|---|",
    ]
    log = MeasurementLog.model_validate_json((REPO / "tests/data/gpu_measurements.json").read_text())
    for m in log.measurements:
        load = m.verdict.load
        if m.verdict.config != "plan" or not load or load.failed:
            continue
        plan = replan(m)
        answer = estimate(
            model_path=model_dir(m.config, root, m.verdict.model),
            isl=load.prompt_tokens,
            osl=load.output_tokens_per_request,
            batch_size=load.concurrency,
            ctx_tokens=plan.vllm.max_num_batched_tokens,
            **quant_modes(plan),
            **parallel(m.config),
        )
        if "error" in answer:
            print(f"{m.verdict.model}: AIConfigurator: {answer['error']}", file=sys.stderr)
            continue
        ours = burst_figures(m)
        itl = ours.get("itl_ms", (None, None))
        burst = f"{load.requests} x {load.prompt_tokens}+{load.output_tokens_per_request}, {load.concurrency} at a time"
        rows.append(
            _row(
                m.verdict.model + (" (AIC: without LoRA)" if plan.vllm.enable_lora else ""),
                burst,
                _triple(
                    answer["tokens_per_second"], ours["output_tokens_per_second"][0], load.output_tokens_per_second
                ),
                _triple(answer["ttft_ms"], ours["ttft_p50_ms"][0], load.ttft_p50_ms),
                _triple(answer["tpot_ms"], *itl),
            )
        )
    return rows


def matching_concurrency(estimate: Estimator, rate: float, query: dict, most: int = 1024) -> tuple[int, dict] | None:
    """The fewest requests in flight at which AIConfigurator's request rate reaches `rate`, and its
    answer there; None when no concurrency up to `most` it can estimate (memory) does."""
    high = 1
    while True:
        answer = estimate(batch_size=high, **query)
        if "error" in answer or high > most:
            return None
        if answer["request_rate"] >= rate:
            break
        high *= 2
    low = high // 2
    while high - low > 1:
        middle = (low + high) // 2
        answer = estimate(batch_size=middle, **query)
        low, high = (middle, high) if "error" in answer or answer["request_rate"] < rate else (low, middle)
    return high, estimate(batch_size=high, **query)


def loads(estimate: Estimator, root: Path) -> list[str]:
    """The load plans at their load points: AIConfigurator, ours and vLLM's run where recorded."""
    rows = [
        _row(
            "model",
            "load point",
            "in flight (AIC)",
            "TTFT ms: AIC / ours p50 / measured p50",
            "ITL ms: AIC TPOT / ours mean / measured mean",
        ),
        "|---|---|---|---|---|",
    ]
    fleet = REPO / "examples/gpu/load/fleet.yaml"
    manifest, lock = load_fleet_and_lock(fleet)
    recorded = REPO / "tests/data/gpu_load_measurements.json"
    runs = load_verify.LoadLog.model_validate_json(recorded.read_text()).measurements if recorded.is_file() else []
    for plan in plan_with_lock(manifest, lock):
        spec = manifest.model(plan.model_name)
        query = {
            "model_path": model_dir(lock.models[plan.model_name].model.config, root, plan.model_name),
            "isl": spec.load.prompt_tokens.p50,
            "osl": spec.load.output_tokens.p50,
            "ctx_tokens": plan.vllm.max_num_batched_tokens,
            **quant_modes(plan),
            **parallel(lock.models[plan.model_name].model.config),
        }
        if spec.lora:
            print(f"{plan.model_name}: AIConfigurator has no LoRA model; left out", file=sys.stderr)
            continue
        fleet_data = {
            **manifest.model_dump(mode="json", exclude_none=True),
            "models": [spec.model_dump(mode="json", exclude_unset=True)],
        }
        for point in load_verify.load_points(plan):
            found = matching_concurrency(estimate, point.requests_per_second, query)
            run = next(
                (
                    r
                    for r in runs
                    if r.check.model == plan.model_name
                    and r.check.flags.config == "plan"
                    and r.check.point.name == point.name
                ),
                None,
            )
            flags = load_verify.ServerFlags(
                config="plan",
                max_num_seqs=plan.vllm.max_num_seqs,
                max_num_batched_tokens=plan.vllm.max_num_batched_tokens,
            )
            entry = lock.models[plan.model_name].model
            ours = (
                load_verify.predicted_at(
                    fleet_data,
                    entry.config,
                    entry.weights_bytes_by_dtype,
                    "NVIDIA H200",
                    run.check.flags if run else flags,
                    point.requests_per_second,
                    kv_tokens=run.check.kv_tokens if run else None,
                )
                or {}
            )
            measured = run.check.measured if run else None
            aic_ttft, aic_tpot = (found[1]["ttft_ms"], found[1]["tpot_ms"]) if found else (None, None)
            rows.append(
                _row(
                    plan.model_name,
                    f"{point.name}, {point.requests_per_second:g} requests/s",
                    str(found[0]) if found else "beyond 1,024",
                    _triple(aic_ttft, ours.get("ttft_p50_ms"), measured and measured.ttft_p50_ms),
                    _triple(aic_tpot, ours.get("itl_mean_ms"), measured and measured.itl_mean_ms),
                )
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=VENV, help="The throwaway environment (made when missing).")
    args = parser.parse_args(argv)
    estimate = Estimator(ensure_venv(args.venv))
    with tempfile.TemporaryDirectory(prefix="llmfleet-aic-") as root:
        try:
            print(f"AIConfigurator {VERSION} ({SYSTEM}, vLLM backend) against the recorded H200 bursts:\n")
            print("\n".join(bursts(estimate, Path(root))))
            print(f"\nAIConfigurator {VERSION} against the load plans of examples/gpu/load/fleet.yaml:\n")
            print("\n".join(loads(estimate, Path(root))))
        finally:
            estimate.close()


if __name__ == "__main__":
    main()
