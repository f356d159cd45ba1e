"""`llmfleet verify --load`: the pure half of checking a load plan against a run.

An open-loop load (Poisson arrivals) at a plan's per-server arrival rate, with lengths drawn
from the manifest's `load:` distributions, sent by vLLM's own `vllm bench serve`; its saved
result against `model_store.planning.performance.predict` for the same server flags. `--sweep` runs the
same load over a small grid of vLLM flags and places the plan's choice by goodput (requests
per second that meet the SLO). No I/O here: scripts/verify_load.py starts the server and the
benchmark.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from llmfleet.model_store.contract.manifest import LoadSpec, SloSpec
from llmfleet.model_store.planning.performance import Batching, Lengths, percentile, predict
from llmfleet.model_store.contract.plan import Frozen, GIB, ServingPlan
from llmfleet.model_store.ops.verify import Recorded, step_inputs_of

# A 95th percentile sits this many standard deviations above the median of a normal distribution.
Z95 = 1.6449
# Words of the benchmark's tokenizer: token i is this prefix and i (scripts/verify_load.py builds it).
WORD_PREFIX = "t"
# Token ids below this are left out of prompts (most vocabularies start with their special tokens).
FIRST_PROMPT_TOKEN = 100
# vLLM's serve defaults for batching (vllm/engine/arg_utils.py get_batch_defaults, 0.26 and 0.32):
# GPUs of at least 70 GiB other than the A100 get the large pair, the rest the small one.
VLLM_DEFAULT_BATCHING_LARGE = (1024, 8192)
VLLM_DEFAULT_BATCHING_SMALL = (256, 2048)
# The sweep's grid beside the plan's flags and vLLM's defaults: max_num_seqs x max_num_batched_tokens.
SWEEP_MAX_NUM_SEQS = (32, 256)
SWEEP_BATCHED_TOKENS = (2048, 8192)
# Warm-up requests before each measured load: the first batches JIT-compile kernels (fused MoE, Triton).
WARMUP_REQUESTS = 8
PERCENTILES = (50, 90, 95, 99)


class LoadPoint(Frozen):
    """One arrival rate a server is loaded at, and why that rate."""

    name: str
    requests_per_second: float = Field(gt=0)


def load_points(plan: ServingPlan) -> list[LoadPoint]:
    """The two claims a load plan makes per server: it meets the SLO at its share of the load
    (`planned`), and it takes up to `max_requests_per_second_per_server` within the SLO
    (`max-within-slo`, the autoscaling target)."""
    performance = plan.performance
    if performance is None:
        raise ValueError(f"model {plan.model_name!r} has no load: section, so no predictions to check")
    points = [
        LoadPoint(name="planned", requests_per_second=round(performance.requests_per_second / performance.replicas, 4))
    ]
    top = performance.max_requests_per_second_per_server
    if top > points[0].requests_per_second * 1.05:
        points.append(LoadPoint(name="max-within-slo", requests_per_second=round(top, 4)))
    return points


def request_count(rate: float, seconds: float, most: int, least: int = 20) -> int:
    """Requests for about `seconds` of arrivals at `rate`, within [least, most]."""
    return max(least, min(most, math.ceil(rate * seconds)))


def _lognormal(rng: random.Random, lengths: Lengths) -> float:
    sigma = math.log(lengths.p95 / lengths.p50) / Z95
    return rng.lognormvariate(math.log(lengths.p50), sigma)


def workload(load: LoadSpec, requests: int, *, max_model_len: int, seed: int = 0) -> list[tuple[int, int]]:
    """(prompt tokens, output tokens) per request: each drawn from a lognormal with the load's
    median and 95th percentile (long-tailed, as request lengths are), the pair kept within
    `max_model_len`. Deterministic for a seed."""
    rng = random.Random(seed)
    prompt = Lengths(load.prompt_tokens.p50, load.prompt_tokens.p95)
    output = Lengths(load.output_tokens.p50, load.output_tokens.p95)
    pairs = []
    for _ in range(requests):
        out = max(1, min(round(_lognormal(rng, output)), max_model_len - 1))
        pairs.append((max(1, min(round(_lognormal(rng, prompt)), max_model_len - out)), out))
    return pairs


def prompt_text(tokens: int, vocab_size: int, rng: random.Random) -> str:
    """A prompt of exactly `tokens` tokens of the benchmark's word tokenizer (random ids)."""
    low = min(FIRST_PROMPT_TOKEN, vocab_size // 4)
    return " ".join(f"{WORD_PREFIX}{rng.randrange(low, vocab_size)}" for _ in range(tokens))


def dataset_rows(pairs: Sequence[tuple[int, int]], vocab_size: int, seed: int = 0) -> list[dict[str, Any]]:
    """`vllm bench serve --dataset-name custom` rows: a prompt of each request's length and its output tokens."""
    rng = random.Random(seed)
    return [{"prompt": prompt_text(p, vocab_size, rng), "output_tokens": o} for p, o in pairs]


def bench_argv(
    *,
    port: int,
    model: str,
    tokenizer: str,
    dataset: str,
    rate: float,
    requests: int,
    slo: SloSpec,
    result_dir: str,
    result_file: str,
    seed: int = 0,
    warmups: int = WARMUP_REQUESTS,
) -> list[str]:
    """The arguments after `vllm bench serve`: Poisson arrivals (burstiness 1) at `rate` of the
    custom dataset's requests as they are (no chat template, EOS ignored, greedy), vLLM's goodput
    at the SLO (TTFT and time per output token), every request's figures saved."""
    return [
        "--backend",
        "openai",
        "--base-url",
        f"http://127.0.0.1:{port}",
        "--endpoint",
        "/v1/completions",
        "--model",
        model,
        "--tokenizer",
        tokenizer,
        "--dataset-name",
        "custom",
        "--dataset-path",
        dataset,
        "--custom-output-len",
        "-1",
        "--skip-chat-template",
        "--num-prompts",
        str(requests),
        "--request-rate",
        f"{rate:g}",
        "--burstiness",
        "1.0",
        "--seed",
        str(seed),
        "--ignore-eos",
        "--temperature",
        "0",
        "--num-warmups",
        str(warmups),
        "--percentile-metrics",
        "ttft,tpot,itl,e2el",
        "--metric-percentiles",
        ",".join(map(str, PERCENTILES)),
        "--goodput",
        f"ttft:{slo.ttft_ms}",
        f"tpot:{slo.itl_ms:g}",
        "--save-result",
        "--save-detailed",
        "--result-dir",
        result_dir,
        "--result-filename",
        result_file,
        "--disable-tqdm",
    ]


class MeasuredLoad(Frozen):
    """What one `vllm bench serve` run measured (milliseconds; rates per second)."""

    requests: int
    failed: int
    seconds: float = Field(description="From the first request sent to the last answered.")
    mean_prompt_tokens: float
    mean_output_tokens: float
    request_throughput: float
    output_tokens_per_second: float
    goodput: float | None = Field(
        description="Requests/s within the SLO's TTFT and time per output token (vLLM's --goodput)."
    )
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    itl_mean_ms: float | None
    itl_p50_ms: float | None
    itl_p95_ms: float | None
    tpot_p95_ms: float | None
    max_concurrent_requests: float | None = None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def measured_load(result: dict[str, Any]) -> MeasuredLoad:
    """The figures of a `vllm bench serve --save-result --save-detailed` JSON: percentiles
    recomputed from every request's TTFT and every token gap (ITL) of the answered requests."""
    errors = result["errors"]
    ok = [i for i, error in enumerate(errors) if not error]
    ttfts = [result["ttfts"][i] for i in ok]
    itls = [gap for i in ok for gap in result["itls"][i]]
    tpots = [sum(result["itls"][i]) / len(result["itls"][i]) for i in ok if result["itls"][i]]
    prompt, output = result["input_lens"], result["output_lens"]
    return MeasuredLoad(
        requests=len(errors),
        failed=len(errors) - len(ok),
        seconds=round(result["duration"], 3),
        mean_prompt_tokens=round(sum(prompt[i] for i in ok) / len(ok), 1) if ok else 0.0,
        mean_output_tokens=round(sum(output[i] for i in ok) / len(ok), 1) if ok else 0.0,
        request_throughput=round(result["request_throughput"], 4),
        output_tokens_per_second=round(result["output_throughput"], 1),
        goodput=None if result.get("request_goodput") is None else round(result["request_goodput"], 4),
        ttft_p50_ms=_ms(percentile(ttfts, 50)),
        ttft_p95_ms=_ms(percentile(ttfts, 95)),
        itl_mean_ms=_ms(sum(itls) / len(itls)) if itls else None,
        itl_p50_ms=_ms(percentile(itls, 50)),
        itl_p95_ms=_ms(percentile(itls, 95)),
        tpot_p95_ms=_ms(percentile(tpots, 95)),
        max_concurrent_requests=result.get("max_concurrent_requests"),
    )


class ServerFlags(Frozen):
    """The batching flags one measured server ran with, by name (`plan`, `vllm-defaults`, or a grid point)."""

    config: str
    max_num_seqs: int
    max_num_batched_tokens: int


def vllm_default_flags(gpu_name: str, gpu_memory_bytes: int) -> ServerFlags:
    """vLLM's own serve defaults for batching on this GPU (VLLM_DEFAULT_BATCHING_*)."""
    large = gpu_memory_bytes >= 70 * GIB and "a100" not in gpu_name.lower()
    seqs, batched = VLLM_DEFAULT_BATCHING_LARGE if large else VLLM_DEFAULT_BATCHING_SMALL
    return ServerFlags(config="vllm-defaults", max_num_seqs=seqs, max_num_batched_tokens=batched)


def sweep_flags(plan: ServingPlan, gpu_name: str, gpu_memory_bytes: int, *, grid: bool) -> list[ServerFlags]:
    """The servers a comparison runs: the plan's flags, vLLM's defaults and, with `grid`, every
    SWEEP_MAX_NUM_SEQS x SWEEP_BATCHED_TOKENS point (a pair equal to one already listed runs once)."""
    flags = [
        ServerFlags(
            config="plan", max_num_seqs=plan.vllm.max_num_seqs, max_num_batched_tokens=plan.vllm.max_num_batched_tokens
        ),
        vllm_default_flags(gpu_name, gpu_memory_bytes),
    ]
    if grid:
        for seqs in SWEEP_MAX_NUM_SEQS:
            for batched in SWEEP_BATCHED_TOKENS:
                flags.append(
                    ServerFlags(
                        config=f"seqs{seqs}-batched{batched}", max_num_seqs=seqs, max_num_batched_tokens=batched
                    )
                )
    seen, unique = set(), []
    for flag in flags:
        if (flag.max_num_seqs, flag.max_num_batched_tokens) not in seen:
            seen.add((flag.max_num_seqs, flag.max_num_batched_tokens))
            unique.append(flag)
    return unique


def flag_overrides(flags: ServerFlags) -> dict[str, str]:
    """The serve flags that make a server run with `flags` (verify_argv replaces them in the plan's argv)."""
    return {"--max-num-seqs": str(flags.max_num_seqs), "--max-num-batched-tokens": str(flags.max_num_batched_tokens)}


class LoadCheck(Frozen):
    """One server's flags, one load point, what it measured."""

    model: str
    flags: ServerFlags
    point: LoadPoint
    repeat: int = Field(default=0, description="0 for the first run of this point on this server, 1 for the next...")
    kv_tokens: int | None = Field(description="The KV cache vLLM logged it holds (tokens).")
    boot_seconds: float | None
    measured: MeasuredLoad


class LoadMeasurement(Recorded):
    """One load check kept as data (tests/data/gpu_load_measurements.json): enough to predict the
    same server at the same load again and compare with what vLLM measured."""

    check: LoadCheck


class LoadLog(Frozen):
    measurements: list[LoadMeasurement]

    def merged(self, new: list[LoadMeasurement]) -> LoadLog:
        """Newer checks of the same (model, flags, point, repeat, GPU, vLLM) replace older ones."""
        key = lambda m: (m.check.model, m.check.flags.config, m.check.point.name, m.check.repeat, m.gpu, m.vllm_version)  # noqa: E731
        replaced = {key(m) for m in new}
        return self.model_copy(update={"measurements": [m for m in self.measurements if key(m) not in replaced] + new})


# The figures compared, and where each comes from in a prediction and a measurement.
FIGURES = ("output_tokens_per_second", "ttft_p50_ms", "ttft_p95_ms", "itl_mean_ms", "itl_p95_ms")


def predicted_figures(measurement: LoadMeasurement) -> dict[str, float] | None:
    """What the performance model predicts for a recorded check (`predicted_at` its server's flags,
    measured KV cache and rate)."""
    check = measurement.check
    return predicted_at(
        measurement.fleet,
        measurement.config,
        measurement.weights_bytes_by_dtype,
        measurement.gpu,
        check.flags,
        check.point.requests_per_second,
        kv_tokens=check.kv_tokens,
    )


def predicted_at(
    fleet: dict[str, Any],
    config: dict[str, Any],
    weights: dict[str, int] | None,
    gpu: str,
    flags: ServerFlags,
    rate: float,
    *,
    kv_tokens: int | None = None,
) -> dict[str, float] | None:
    """The performance model's figures (FIGURES) for one server of a one-model fleet's plan on `gpu`
    with `flags` and `kv_tokens` of KV cache (default: the plan's), at `rate` requests/s of the
    fleet's load lengths, at the 95th percentile; None where it predicts saturation (more in
    flight than max_num_seqs or the KV cache holds, or prefill never idle)."""
    load = LoadSpec.model_validate(fleet["models"][0]["load"])
    cost, planned = step_inputs_of(fleet, config, weights, gpu)
    batching = Batching(flags.max_num_seqs, flags.max_num_batched_tokens, kv_tokens or planned.kv_tokens)
    prompt = Lengths(load.prompt_tokens.p50, load.prompt_tokens.p95)
    output = Lengths(load.output_tokens.p50, load.output_tokens.p95)
    p = predict(cost, batching, rate, prompt, output, 95)
    if p is None:
        return None
    return {
        "output_tokens_per_second": p.output_tokens_per_second,
        "ttft_p50_ms": p.ttft_p50_seconds * 1000,
        "ttft_p95_ms": p.ttft_q_seconds * 1000,
        "itl_mean_ms": p.step_seconds * 1000,
        "itl_p95_ms": p.itl_q_seconds * 1000,
    }


def compared(measurement: LoadMeasurement) -> dict[str, tuple[float | None, float | None]]:
    """(predicted, measured) per FIGURES; predicted None where the model predicts saturation."""
    predicted = predicted_figures(measurement) or {}
    measured = measurement.check.measured
    return {figure: (predicted.get(figure), getattr(measured, figure)) for figure in FIGURES}


class SweepRank(Frozen):
    """Where the plan's flags sit among the servers a sweep measured at one load point."""

    point: str
    goodput: dict[str, float] = Field(description="Requests/s within the SLO, per server config (mean over repeats).")
    best: str
    plan_share_of_best: float | None = Field(description="The plan's goodput / the best's (1.0: the plan is the best).")
    plan_rank: int | None = Field(description="1 for the best; ties share a rank.")


def sweep_ranks(checks: Sequence[LoadCheck]) -> list[SweepRank]:
    """Per load point, the servers' goodput and where the plan's stands."""
    ranks = []
    for point in dict.fromkeys(c.point.name for c in checks):
        runs: dict[str, list[float]] = {}
        for check in checks:
            if check.point.name == point and check.measured.goodput is not None:
                runs.setdefault(check.flags.config, []).append(check.measured.goodput)
        if not runs:
            continue
        goodput = {config: round(sum(values) / len(values), 4) for config, values in runs.items()}
        best = max(goodput, key=goodput.get)
        plan = goodput.get("plan")
        ranks.append(
            SweepRank(
                point=point,
                goodput=goodput,
                best=best,
                plan_share_of_best=None if plan is None or not goodput[best] else round(plan / goodput[best], 4),
                plan_rank=None if plan is None else 1 + sum(1 for value in goodput.values() if value > plan),
            )
        )
    return ranks
