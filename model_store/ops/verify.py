"""`llmfleet verify`: the pure half. What to run on a local GPU for a plan, and how the figures
vLLM printed while it started (model_store/ops/boot_log.py) compare with the plan. No I/O here; the
CLI (scripts/verify_cli.py) starts vLLM and sends the load.

Memory figures follow vLLM 0.26 and 0.32 (vllm/v1/worker/gpu_worker.py, gpu_model_runner.py,
gpu/model_runner.py, v1/core/kv_cache_utils.py, v1/engine/core.py; read 2026-12).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, model_serializer

from llmfleet.model_store.errors import EXIT_REFUSED, LlmfleetError
from llmfleet.model_store.ops.boot_log import BootFigures
from llmfleet.model_store.planning.performance import Batching, percentile, simulate_burst, step_cost, StepCost
from llmfleet.model_store.contract.plan import Frozen, GIB, json_flag, ServingPlan
from llmfleet.model_store.planning.text import VLLM_DEFAULT_GPU_MEMORY_UTILIZATION
from llmfleet.model_store.contract.kinds import kind

# The plan promised concurrency it cannot hold when vLLM's KV capacity is this far below it.
KV_TOLERANCE = 0.03
# The seed notebook's settings (`verify --compare` runs them beside the plan's): eager mode,
# 70 % of GPU memory, a 2,048-token context.
SEED_UTILIZATION = 0.7
SEED_MAX_MODEL_LEN = 2048


class VerifyRefused(LlmfleetError):
    """This machine cannot stand in for the plan's GPU; the message says why."""

    exit_code = EXIT_REFUSED


class LocalGpu(Frozen):
    name: str
    memory_bytes: int  # nvidia-smi memory.total
    count: int


class Emulation(Frozen):
    gpu_memory_utilization: float
    note: str


def check_measurable(plan: ServingPlan) -> None:
    """verify starts vLLM without a tokenizer or image processor: a multimodal plan can be
    measured only as text (`language_model_only`), where vLLM leaves its vision encoder out.
    An image model is not served by vLLM: scripts/image_gpu_bench.py measures it."""
    if not kind(plan.kind).served_by_vllm:
        raise VerifyRefused(f"model {plan.model_name!r} is an image model; measure it with `python -m llmfleet.scripts.image_gpu_bench`")
    if "vision" in plan.family and not plan.vllm.language_model_only:
        raise VerifyRefused(
            f"model {plan.model_name!r} is multimodal and verify has no image processor to start it with; "
            "measure its text path with language_model_only: true"
        )


def emulate(plan: ServingPlan, gpu: LocalGpu) -> Emulation:
    """The --gpu-memory-utilization that gives vLLM the plan's usable bytes on this GPU.

    vLLM hands `ceil(total x utilization)` bytes to the engine; on a larger GPU a lower
    fraction leaves exactly the plan's `usable_bytes_per_gpu`. A smaller GPU, or fewer GPUs
    than the plan's tensor-parallel size, cannot stand in for it.
    """
    if gpu.count < plan.tensor_parallel_size:
        raise VerifyRefused(
            f"model {plan.model_name!r}: the plan shards over {plan.tensor_parallel_size} GPUs (TP), "
            f"this machine has {gpu.count}"
        )
    planned = plan.gpu_memory_bytes
    if gpu.memory_bytes < planned:
        raise VerifyRefused(
            f"model {plan.model_name!r}: planned for {plan.gpu_name} ({planned / GIB:.1f} GiB), "
            f"larger than this {gpu.name} ({gpu.memory_bytes / GIB:.1f} GiB)"
        )
    utilization = plan.vllm.gpu_memory_utilization
    if gpu.memory_bytes == planned:
        return Emulation(gpu_memory_utilization=utilization, note=f"same GPU memory as the plan's {plan.gpu_name}")
    emulated = math.floor(utilization * planned / gpu.memory_bytes * 1e6) / 1e6  # never above the plan
    return Emulation(
        gpu_memory_utilization=emulated,
        note=(
            f"emulating {plan.gpu_name} ({planned / GIB:.1f} GiB x {utilization}) on {gpu.name} "
            f"({gpu.memory_bytes / GIB:.1f} GiB): --gpu-memory-utilization {emulated}"
        ),
    )


def _replace_flag(argv: list[str], flag: str, value: str | None) -> list[str]:
    """argv with `flag`'s value replaced (added when absent); value None removes the flag."""
    out, skip = [], False
    for i, item in enumerate(argv):
        if skip:
            skip = False
            continue
        if item == flag:
            skip = i + 1 < len(argv) and not argv[i + 1].startswith("--")
            continue
        out.append(item)
    return out if value is None else [*out, flag, value]


Config = Literal["plan", "vllm-defaults", "seed-notebook"]
CONFIGS: tuple[Config, ...] = ("plan", "vllm-defaults", "seed-notebook")


def verify_argv(
    plan_argv: list[str],
    *,
    plan: ServingPlan,
    model_dir: str,
    port: int,
    emulation: Emulation,
    draft_dir: str | None = None,
    config: Config = "plan",
    tokenizer: str | None = None,
    overrides: dict[str, str] | None = None,
    host_args: tuple[str, ...] = (),
) -> list[str]:
    """The serve argv for a measurement: the plan's own (`plan_argv`, as the entrypoint builds
    it) with random weights from config.json alone (`--load-format dummy`), no tokenizer (or
    the one in `tokenizer`: a text load needs one), the emulated memory share, a speculative
    draft model read from `draft_dir`, `overrides` (flag: value) replacing the plan's, and
    `host_args` last: flags this host's vLLM build needs that the plan does not decide (a
    kernel backend its wheels can run), kept in the measurement.

    `vllm-defaults` keeps only what names the model; `seed-notebook` is the seed's
    enforce_eager, utilization 0.7 and 2,048-token context.
    """
    argv = _config_argv(
        plan_argv, plan=plan, model_dir=model_dir, port=port, emulation=emulation, draft_dir=draft_dir, config=config,
        tokenizer=tokenizer, overrides=overrides,
    )  # fmt: skip
    return [*argv, *host_args]


def _config_argv(
    plan_argv: list[str], *, plan: ServingPlan, model_dir: str, port: int, emulation: Emulation, draft_dir: str | None,
    config: Config, tokenizer: str | None, overrides: dict[str, str] | None,
) -> list[str]:  # fmt: skip
    text = ["--tokenizer", tokenizer] if tokenizer else ["--skip-tokenizer-init"]
    argv = _replace_flag(plan_argv, "--load-format", "dummy")
    argv = _replace_flag(argv, "--gpu-memory-utilization", str(emulation.gpu_memory_utilization))
    argv = [*argv, *text]
    if draft_dir and plan.vllm.speculative_config:
        speculative = {**plan.vllm.speculative_config, "model": draft_dir}
        argv = _replace_flag(argv, "--speculative-config", json_flag(speculative))
    if config == "plan":
        for flag, value in (overrides or {}).items():
            argv = _replace_flag(argv, flag, value)
        return argv
    essentials = ["--model", model_dir, "--host", "127.0.0.1", "--port", str(port), "--served-model-name",
                  plan.model_name, "--load-format", "dummy", *text]  # fmt: skip
    if plan.tensor_parallel_size > 1:
        essentials += ["--tensor-parallel-size", str(plan.tensor_parallel_size)]
    # Each setting's share of memory shrunk by the same factor as the plan's emulation. (vLLM
    # sizes its default batches from the local GPU: on a larger GPU they are its defaults.)
    scale = emulation.gpu_memory_utilization / plan.vllm.gpu_memory_utilization
    if config == "vllm-defaults":
        return [*essentials, "--gpu-memory-utilization", f"{VLLM_DEFAULT_GPU_MEMORY_UTILIZATION * scale:.4f}"]
    return [*essentials, "--enforce-eager", "--gpu-memory-utilization", f"{SEED_UTILIZATION * scale:.4f}",
            "--max-model-len", str(SEED_MAX_MODEL_LEN)]  # fmt: skip


# --- load ----------------------------------------------------------------------------------


class LoadFigures(Frozen):
    requests: int
    failed: int
    concurrency: int
    prompt_tokens: int
    output_tokens_per_request: int
    seconds: float
    output_tokens_per_second: float
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None


def load_figures(
    ttfts: list[float], output_tokens: int, failed: int, seconds: float, *, concurrency: int, prompt_tokens: int, max_tokens: int
) -> LoadFigures:
    return LoadFigures(
        requests=len(ttfts) + failed,
        failed=failed,
        concurrency=concurrency,
        prompt_tokens=prompt_tokens,
        output_tokens_per_request=max_tokens,
        seconds=round(seconds, 3),
        output_tokens_per_second=round(output_tokens / seconds, 1) if seconds > 0 else 0.0,
        ttft_p50_ms=_ms(percentile(ttfts, 50)),
        ttft_p95_ms=_ms(percentile(ttfts, 95)),
    )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


# --- verdict -------------------------------------------------------------------------------


class Verdict(Frozen):
    model: str
    config: Config = "plan"
    note: str
    predicted_kv_tokens: int
    measured_kv_tokens: int | None
    kv_ratio: float | None = Field(description="measured / predicted KV tokens")
    predicted_weights_gib: float
    measured_weights_gib: float | None
    weights_ratio: float | None
    boot: BootFigures
    boot_seconds: float | None
    load: LoadFigures | None = None
    slo_ttft_ms: int | None = None
    slo_met: bool | None = Field(default=None, description="TTFT p95 within the model's SLO (None: no SLO or no load test).")
    ok: bool
    problems: list[str]


def predicted_weights_gib(plan: ServingPlan) -> float:
    """What vLLM's "Model loading took X GiB" should say: the weights on one GPU plus the LoRA
    buffers it preallocates while loading the model."""
    return (plan.memory.weights_bytes_per_gpu + plan.memory.lora_bytes_per_gpu) / GIB


def judge(
    plan: ServingPlan,
    boot: BootFigures,
    boot_seconds: float | None,
    load: LoadFigures | None,
    note: str,
    *,
    config: Config = "plan",
    slo_ttft_ms: int | None = None,
) -> Verdict:
    """Measured against predicted; not ok when vLLM holds over KV_TOLERANCE fewer tokens."""
    predicted_kv = plan.memory.token_capacity
    predicted_weights = predicted_weights_gib(plan)
    problems = []
    kv_ratio = None
    if boot.kv_tokens is None:
        problems.append("vLLM's log has no 'KV cache size' line: the engine did not finish starting")
    else:
        kv_ratio = round(boot.kv_tokens / predicted_kv, 4) if predicted_kv else None
        # Other settings size the cache differently: their KV figure is reported, not judged.
        if config == "plan" and kv_ratio is not None and kv_ratio < 1 - KV_TOLERANCE:
            problems.append(
                f"vLLM holds {boot.kv_tokens:,} KV tokens, {(1 - kv_ratio) * 100:.1f}% below the plan's "
                f"{predicted_kv:,}: the plan promises concurrency this GPU cannot hold"
            )
    if load is not None and load.failed:
        problems.append(f"{load.failed} of {load.requests} load-test requests failed")
    return Verdict(
        model=plan.model_name,
        config=config,
        note=note,
        predicted_kv_tokens=predicted_kv,
        measured_kv_tokens=boot.kv_tokens,
        kv_ratio=kv_ratio,
        predicted_weights_gib=round(predicted_weights, 3),
        measured_weights_gib=boot.weights_gib,
        weights_ratio=round(boot.weights_gib / predicted_weights, 4) if boot.weights_gib and predicted_weights else None,
        boot=boot,
        boot_seconds=None if boot_seconds is None else round(boot_seconds, 1),
        load=load,
        slo_ttft_ms=slo_ttft_ms,
        slo_met=None if slo_ttft_ms is None or load is None or load.ttft_p95_ms is None else load.ttft_p95_ms <= slo_ttft_ms,
        ok=not problems,
        problems=problems,
    )


# --- records ---------------------------------------------------------------------------------


class Recorded(Frozen):
    """Where and from what a recorded measurement was made: enough to plan the same model again."""

    date: str
    gpu: str
    gpu_memory_bytes: int
    vllm_version: str
    fleet: dict[str, Any] = Field(description="A one-model fleet manifest (as parsed) the plan came from.")
    config: dict[str, Any] = Field(description="The model's config.json (vLLM built random weights from it).")
    weights_bytes_by_dtype: dict[str, int] | None = None
    host_vllm_args: list[str] = Field(default_factory=list, description="Flags added for the host's vLLM build, not the plan's.")

    @model_serializer(mode="wrap")
    def _without_empty_host_args(self, handler) -> dict[str, Any]:
        """Records without host flags are written as before the field existed."""
        data = handler(self)
        if not data.get("host_vllm_args"):
            data.pop("host_vllm_args", None)
        return data


class Measurement(Recorded):
    """One verified plan, kept as data (tests/data/gpu_measurements.json): enough to plan the
    same model again and compare with what vLLM measured."""

    verdict: Verdict


def replan(measurement: Measurement) -> ServingPlan:
    """The plan today's planner makes for a recorded measurement's model (its fleet entry and
    config.json as recorded): what the 3 % regression test and the report compare."""
    return _replan(measurement.fleet, measurement.config, measurement.weights_bytes_by_dtype)[0]


def _replan(fleet_data: dict[str, Any], config: dict[str, Any], weights: dict[str, int] | None):
    """(plan, architecture facts, model spec) of a recorded one-model fleet and config.json."""
    from llmfleet.model_store.facts.families import facts_from_config
    from llmfleet.model_store.contract.manifest import FleetManifest
    from llmfleet.model_store.planning.text import plan_model

    fleet = FleetManifest.model_validate(fleet_data)
    facts = facts_from_config(config, total_size=sum(weights.values()) if weights else None, source="record")
    return plan_model(fleet, fleet.models[0], facts), facts, fleet.models[0]


def step_inputs(measurement: Measurement) -> tuple[StepCost, Batching]:
    """What the performance model needs to predict a recorded measurement's load: the model's per-step
    cost on the measured GPU at the plan's TP, and the plan's batching limits and KV cache."""
    return step_inputs_of(measurement.fleet, measurement.config, measurement.weights_bytes_by_dtype, measurement.gpu)


def step_inputs_of(
    fleet_data: dict[str, Any], config: dict[str, Any], weights: dict[str, int] | None, gpu_name: str
) -> tuple[StepCost, Batching]:
    """The per-step cost of a recorded one-model fleet's plan on `gpu_name` (a catalog GPU) at the
    plan's TP, and the plan's batching limits and KV cache."""
    from llmfleet.model_store.planning.catalog import INSTANCES
    from llmfleet.model_store.planning.text import DTYPE_BYTES, kv_element_bytes, weight_format

    plan, facts, spec = _replan(fleet_data, config, weights)
    gpu = next(i.gpu for i in INSTANCES if i.gpu.name == gpu_name)
    cost = step_cost(
        facts, gpu, plan.tensor_parallel_size,
        weights_bytes=plan.memory.weights_bytes, dtype_bytes=DTYPE_BYTES[plan.vllm.dtype],
        fmt=weight_format(spec, facts), kv_element_bytes=kv_element_bytes(plan.vllm.kv_cache_dtype, plan.vllm.dtype),
    )  # fmt: skip
    return cost, Batching(plan.vllm.max_num_seqs, plan.vllm.max_num_batched_tokens, plan.memory.token_capacity)


def burst_figures(measurement: Measurement) -> dict[str, tuple[float, float]]:
    """(predicted, measured) for a recorded load test: output tokens/s, TTFT p50 and p95 (ms) and, when all
    requests started at once (one wave), the inter-token latency (ms): the time after the last first token
    over the remaining output tokens."""
    load = measurement.verdict.load
    cost, batching = step_inputs(measurement)
    predicted = simulate_burst(
        cost, batching, requests=load.requests, concurrency=load.concurrency,
        prompt_tokens=load.prompt_tokens, output_tokens=load.output_tokens_per_request,
    )  # fmt: skip
    figures = {
        "output_tokens_per_second": (predicted.output_tokens_per_second, load.output_tokens_per_second),
        "ttft_p50_ms": (predicted.ttft_p50_seconds * 1000, load.ttft_p50_ms),
        "ttft_p95_ms": (predicted.ttft_p95_seconds * 1000, load.ttft_p95_ms),
    }
    if load.requests == load.concurrency and load.output_tokens_per_request > 1:
        steps = load.output_tokens_per_request - 1
        figures["itl_ms"] = (
            (predicted.seconds - predicted.ttft_p95_seconds) / steps * 1000,
            (load.seconds - load.ttft_p95_ms / 1000) / steps * 1000,
        )
    return figures


class MeasurementLog(Frozen):
    measurements: list[Measurement]

    def merged(self, new: list[Measurement]) -> MeasurementLog:
        """Newer measurements of the same (model, config, GPU, vLLM) replace older ones."""
        key = lambda m: (m.verdict.model, m.verdict.config, m.gpu, m.vllm_version)  # noqa: E731
        replaced = {key(m) for m in new}
        kept = [m for m in self.measurements if key(m) not in replaced]
        return self.model_copy(update={"measurements": kept + new})
