"""`llmfleet verify --load`'s decisions: the load points a plan claims, the workload drawn from its
length distributions, the word tokenizer that makes a prompt of n words n tokens, the
`vllm bench serve` arguments (parsed by vLLM's own parser), reading its saved result, the sweep's
servers and where the plan's flags rank."""

from __future__ import annotations

import random
import statistics

import pytest

from llmfleet.model_store.ops import load_verify
from llmfleet.model_store.planning import performance
from llmfleet.model_store.planning.fleet import load_and_plan
from llmfleet.model_store.ops.load_verify import LoadCheck, LoadPoint, MeasuredLoad, ServerFlags
from llmfleet.model_store.contract.manifest import LoadSpec
from llmfleet.model_store.contract.plan import GIB
from llmfleet.scripts.verify_load import word_tokenizer
from tests.conftest import REPO

PLANS = {p.model_name: p for p in load_and_plan(REPO / "examples/gpu/load/fleet.yaml")[1]}
LOAD = LoadSpec.model_validate(
    {
        "requests_per_second": 3,
        "prompt_tokens": {"p50": 1000, "p95": 2000},
        "output_tokens": {"p50": 200, "p95": 400},
        "slo": {"ttft_ms": 1000, "itl_ms": 40},
    }
)


def test_the_load_points_are_the_plans_share_of_the_load_and_its_scaling_target() -> None:
    plan = PLANS["qwen3-8b"]
    planned, target = load_verify.load_points(plan)
    assert (planned.name, planned.requests_per_second) == ("planned", 3.0)
    assert target.name == "max-within-slo"
    assert target.requests_per_second == pytest.approx(plan.performance.max_requests_per_second_per_server, abs=1e-4)
    with pytest.raises(ValueError, match="no load: section"):
        load_verify.load_points(load_and_plan(REPO / "examples/gpu/fleet.yaml")[1][0])


def test_the_workload_has_the_loads_median_and_95th_percentile() -> None:
    pairs = load_verify.workload(LOAD, 20_000, max_model_len=8192, seed=3)
    prompts, outputs = [p for p, _ in pairs], [o for _, o in pairs]
    assert statistics.median(prompts) == pytest.approx(1000, rel=0.03)
    assert performance.percentile(prompts, 95) == pytest.approx(2000, rel=0.04)
    assert statistics.median(outputs) == pytest.approx(200, rel=0.03)
    assert performance.percentile(outputs, 95) == pytest.approx(400, rel=0.04)
    assert all(p >= 1 and o >= 1 and p + o <= 8192 for p, o in pairs)
    assert pairs[:50] == load_verify.workload(LOAD, 50, max_model_len=8192, seed=3)  # deterministic per seed
    assert load_verify.workload(LOAD, 50, max_model_len=8192, seed=4) != pairs[:50]


def test_long_requests_are_cut_to_the_context() -> None:
    pairs = load_verify.workload(LOAD, 2_000, max_model_len=1500, seed=0)
    assert max(p + o for p, o in pairs) == 1500


def test_a_prompt_of_n_words_is_n_tokens_of_the_word_tokenizer(tmp_path) -> None:
    from transformers import AutoTokenizer

    folder = word_tokenizer(1000, tmp_path / "tok")
    assert word_tokenizer(1000, tmp_path / "tok") == folder  # made once
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert len(tokenizer) == 1000
    rng = random.Random(0)
    for n in (1, 7, 513):
        text = load_verify.prompt_text(n, 1000, rng)
        ids = tokenizer(text).input_ids
        assert len(ids) == n and min(ids) >= load_verify.FIRST_PROMPT_TOKEN
        assert tokenizer.decode(ids) == text
    assert tokenizer.decode([0, 999]) == "t0 t999"  # any generated token decodes


def test_the_dataset_rows_carry_each_requests_output_length() -> None:
    rows = load_verify.dataset_rows([(3, 5), (2, 1)], vocab_size=500)
    assert [len(r["prompt"].split()) for r in rows] == [3, 2] and [r["output_tokens"] for r in rows] == [5, 1]


def test_the_bench_arguments_mean_what_they_say_to_vllms_own_parser() -> None:
    from vllm.entrypoints.cli.benchmark.serve import BenchmarkServingSubcommand
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    argv = load_verify.bench_argv(
        port=8123,
        model="qwen3-8b",
        tokenizer="/tok",
        dataset="/d.jsonl",
        rate=2.5,
        requests=75,
        slo=LOAD.slo,
        result_dir="/r",
        result_file="planned-0.json",
        seed=7,
    )
    parser = FlexibleArgumentParser()
    BenchmarkServingSubcommand.add_cli_args(parser)
    args = parser.parse_args(argv)
    assert (args.dataset_name, args.dataset_path, args.custom_output_len, args.skip_chat_template) == (
        "custom",
        "/d.jsonl",
        -1,
        True,
    )
    assert (args.request_rate, args.burstiness, args.num_prompts, args.seed) == (2.5, 1.0, 75, 7)
    assert (args.model, args.tokenizer, args.base_url, args.endpoint) == (
        "qwen3-8b",
        "/tok",
        "http://127.0.0.1:8123",
        "/v1/completions",
    )
    assert args.ignore_eos and args.temperature == 0 and args.save_result and args.save_detailed
    assert args.goodput == ["ttft:1000", "tpot:40"] and args.metric_percentiles == "50,90,95,99"
    assert (args.result_dir, args.result_filename, args.num_warmups) == (
        "/r",
        "planned-0.json",
        load_verify.WARMUP_REQUESTS,
    )


def _result(**overrides) -> dict:
    """A `vllm bench serve --save-detailed` result: three requests, the second failed."""
    result = {
        "duration": 2.0,
        "completed": 2,
        "failed": 1,
        "request_throughput": 1.0,
        "output_throughput": 3.5,
        "request_goodput": 0.5,
        "input_lens": [10, 99, 30],
        "output_lens": [3, 0, 4],
        "ttfts": [0.1, 0.0, 0.3],
        "itls": [[0.01, 0.03], [], [0.02, 0.02, 0.06]],
        "errors": ["", "HTTP 500", ""],
        "max_concurrent_requests": 2,
    }
    return {**result, **overrides}


def test_the_measured_figures_come_from_every_answered_request() -> None:
    m = load_verify.measured_load(_result())
    assert (m.requests, m.failed, m.seconds, m.goodput) == (3, 1, 2.0, 0.5)
    assert (m.mean_prompt_tokens, m.mean_output_tokens) == (20.0, 3.5)  # the failed request is left out
    assert (m.ttft_p50_ms, m.ttft_p95_ms) == (200.0, 290.0)
    # token gaps 10, 30, 20, 20, 60 ms: mean 28, median 20, p95 54 (linear interpolation)
    assert (m.itl_mean_ms, m.itl_p50_ms, m.itl_p95_ms) == (28.0, 20.0, 54.0)
    assert m.tpot_p95_ms == 32.67  # per request 20 and 33.33 ms: 20 + 0.95 x 13.33
    assert load_verify.measured_load(_result(request_goodput=None)).goodput is None


def test_the_sweep_runs_the_plan_vllms_defaults_and_the_grid_each_pair_once() -> None:
    plan = PLANS["qwen3-8b"]
    flags = load_verify.sweep_flags(plan, "NVIDIA H200", 141 * GIB, grid=True)
    pairs = [(f.max_num_seqs, f.max_num_batched_tokens) for f in flags]
    assert flags[0].config == "plan" and pairs[0] == (plan.vllm.max_num_seqs, plan.vllm.max_num_batched_tokens)
    assert flags[1] == ServerFlags(config="vllm-defaults", max_num_seqs=1024, max_num_batched_tokens=8192)
    assert len(pairs) == len(set(pairs)) and (256, 2048) in pairs and (32, 8192) in pairs
    assert len(load_verify.sweep_flags(plan, "NVIDIA H200", 141 * GIB, grid=False)) == 2
    assert load_verify.vllm_default_flags("NVIDIA A100-SXM4-80GB", 80 * GIB).max_num_seqs == 256
    assert load_verify.vllm_default_flags("NVIDIA L4", 22 * GIB).max_num_batched_tokens == 2048
    assert load_verify.flag_overrides(flags[2]) == {
        "--max-num-seqs": str(flags[2].max_num_seqs),
        "--max-num-batched-tokens": str(flags[2].max_num_batched_tokens),
    }


def _check(config: str, point: str, goodput: float | None, repeat: int = 0) -> LoadCheck:
    measured = load_verify.measured_load(_result(request_goodput=goodput))
    return LoadCheck(
        model="m",
        flags=ServerFlags(config=config, max_num_seqs=8, max_num_batched_tokens=512),
        point=LoadPoint(name=point, requests_per_second=1),
        repeat=repeat,
        kv_tokens=1,
        boot_seconds=1.0,
        measured=measured,
    )


def test_the_plan_is_ranked_by_goodput_at_each_point_repeats_averaged() -> None:
    checks = [
        _check("plan", "planned", 3.0),
        _check("vllm-defaults", "planned", 3.0),
        _check("plan", "max-within-slo", 4.0),
        _check("plan", "max-within-slo", 5.0, repeat=1),
        _check("vllm-defaults", "max-within-slo", 6.0),
        _check("seqs32-batched8192", "max-within-slo", 2.0),
    ]
    planned, target = load_verify.sweep_ranks(checks)
    assert (planned.point, planned.plan_rank, planned.plan_share_of_best) == (
        "planned",
        1,
        1.0,
    )  # a tie shares the first rank
    assert target.goodput == {"plan": 4.5, "vllm-defaults": 6.0, "seqs32-batched8192": 2.0}
    assert (target.best, target.plan_rank, target.plan_share_of_best) == ("vllm-defaults", 2, 0.75)


def test_newer_checks_replace_older_ones_of_the_same_server_point_and_repeat() -> None:
    def measurement(check: LoadCheck, date: str) -> load_verify.LoadMeasurement:
        return load_verify.LoadMeasurement(
            date=date, gpu="g", gpu_memory_bytes=1, vllm_version="v", fleet={}, config={}, check=check
        )

    log = load_verify.LoadLog(
        measurements=[
            measurement(_check("plan", "planned", 1.0), "old"),
            measurement(_check("plan", "planned", 1.0, 1), "old"),
        ]
    )
    merged = log.merged([measurement(_check("plan", "planned", 2.0), "new")])
    assert [(m.date, m.check.repeat) for m in merged.measurements] == [("old", 1), ("new", 0)]


def _recorded(plan_name: str, flags: ServerFlags, rate: float) -> load_verify.LoadMeasurement:
    """A check of examples/gpu/load's model as the CLI records it (figures made up; predictions are what is tested)."""
    from llmfleet.model_store.planning.fleet import load_fleet_and_lock

    manifest, lock = load_fleet_and_lock(REPO / "examples/gpu/load/fleet.yaml")
    spec, entry = manifest.model(plan_name), lock.models[plan_name]
    fleet = {
        **manifest.model_dump(mode="json", exclude_none=True),
        "models": [spec.model_dump(mode="json", exclude_unset=True)],
    }
    check = LoadCheck(
        model=plan_name,
        flags=flags,
        point=LoadPoint(name="planned", requests_per_second=rate),
        kv_tokens=None,
        boot_seconds=1.0,
        measured=MeasuredLoad.model_validate({**load_verify.measured_load(_result()).model_dump()}),
    )
    return load_verify.LoadMeasurement(
        date="d",
        gpu="NVIDIA H200",
        gpu_memory_bytes=141 * GIB,
        vllm_version="0.26.0",
        fleet=fleet,
        config=entry.model.config,
        weights_bytes_by_dtype=entry.model.weights_bytes_by_dtype,
        check=check,
    )


def test_a_recorded_check_is_predicted_again_with_its_servers_flags() -> None:
    plan = PLANS["qwen3-8b"]
    flags = load_verify.sweep_flags(plan, "NVIDIA H200", 141 * GIB, grid=False)[0]
    figures = load_verify.compared(_recorded("qwen3-8b", flags, 3.0))
    # the plan's own prediction at its planned load, as `llmfleet plan` prints it
    assert figures["ttft_p95_ms"][0] == pytest.approx(plan.performance.ttft_ms, abs=0.1)
    assert figures["itl_mean_ms"][0] == pytest.approx(plan.performance.itl_mean_ms, abs=0.01)
    assert figures["output_tokens_per_second"][0] == pytest.approx(3.0 * 200)
    assert figures["ttft_p95_ms"][1] == 290.0
    # two sequences at most cannot hold 3 requests/s of 200 tokens: saturation, no prediction
    few = ServerFlags(config="seqs2", max_num_seqs=2, max_num_batched_tokens=2048)
    assert all(predicted is None for predicted, _ in load_verify.compared(_recorded("qwen3-8b", few, 3.0)).values())
