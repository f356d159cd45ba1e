"""`llmfleet verify`'s decisions: GPU emulation, the measurement argv (checked by vLLM's own
parser), reading vLLM's start-up log (real excerpts from the H200 runs), the verdict."""

from __future__ import annotations

import json

import pytest

from llmfleet.containers.entrypoint.vllm_command import ArgvRejected, import_vllm_parser, serve_argv, validate_argv
from llmfleet.model_store.ops import verify
from llmfleet.model_store.ops.boot_log import BootFigures, parse_boot_log
from llmfleet.model_store.planning.fleet import load_and_plan
from llmfleet.model_store.contract.plan import GIB
from tests.conftest import REPO

PLANS = {p.model_name: p for p in load_and_plan(REPO / "examples/gpu/fleet.yaml")[1]}
H200 = verify.LocalGpu(name="NVIDIA H200", memory_bytes=143_771 * 2**20, count=1)


def _argv(plan, config="plan", emulation=None, draft=None, host_args=()):
    base = serve_argv(plan, model="/m", port=8123, lora_modules={}, host="127.0.0.1")
    return verify.verify_argv(
        base, plan=plan, model_dir="/m", port=8123, emulation=emulation or verify.emulate(plan, H200), draft_dir=draft,
        config=config, host_args=host_args,
    )  # fmt: skip


def test_same_gpu_keeps_the_plans_share() -> None:
    emulation = verify.emulate(PLANS["qwen3-8b"], H200)
    assert emulation.gpu_memory_utilization == 0.9 and "same GPU memory" in emulation.note


def test_a_larger_gpu_gives_vllm_exactly_the_planned_bytes() -> None:
    small = next(p for p in load_and_plan(REPO / "fleet.yaml")[1] if p.model_name == "qwen3-small")  # an L4 plan
    emulation = verify.emulate(small, H200)
    usable_here = H200.memory_bytes * emulation.gpu_memory_utilization
    assert usable_here == pytest.approx(small.memory.usable_bytes_per_gpu, rel=1e-5)
    assert usable_here <= small.memory.usable_bytes_per_gpu  # never more than planned
    assert "emulating NVIDIA L4" in emulation.note


def test_a_smaller_gpu_or_too_few_gpus_is_refused() -> None:
    l4 = verify.LocalGpu(name="NVIDIA L4", memory_bytes=23_034 * 2**20, count=4)
    with pytest.raises(verify.VerifyRefused, match="larger than this NVIDIA L4"):
        verify.emulate(PLANS["qwen3-8b"], l4)
    tp4 = next(p for p in load_and_plan(REPO / "fleet.yaml")[1] if p.tensor_parallel_size == 4)
    with pytest.raises(verify.VerifyRefused, match="shards over 4 GPUs"):
        verify.emulate(tp4, verify.LocalGpu(name="NVIDIA H200", memory_bytes=H200.memory_bytes, count=2))


def test_measurement_argv_is_the_plans_with_random_weights() -> None:
    plan = PLANS["mistral-small-24b-fp8"]
    argv = _argv(plan)
    assert argv[argv.index("--load-format") + 1] == "dummy"
    assert argv.count("--load-format") == 1 and argv.count("--gpu-memory-utilization") == 1
    assert "--skip-tokenizer-init" in argv
    for flag in ("--quantization", "--kv-cache-dtype", "--max-model-len", "--max-num-seqs", "--middleware"):
        assert flag in argv
    emulated = _argv(plan, emulation=verify.Emulation(gpu_memory_utilization=0.5, note=""))
    assert emulated[emulated.index("--gpu-memory-utilization") + 1] == "0.5"


def test_a_draft_model_is_read_from_its_local_config() -> None:
    plan = next(p for p in load_and_plan(REPO / "fleet.yaml")[1] if p.vllm.speculative_config)
    argv = _argv(plan, emulation=verify.Emulation(gpu_memory_utilization=0.9, note=""), draft="/draft")
    assert json.loads(argv[argv.index("--speculative-config") + 1])["model"] == "/draft"


def test_compare_configurations() -> None:
    plan = PLANS["qwen3-8b"]
    defaults = _argv(plan, "vllm-defaults")
    assert "--max-model-len" not in defaults and "--max-num-seqs" not in defaults
    assert defaults[defaults.index("--gpu-memory-utilization") + 1] == "0.9200"
    seed = _argv(plan, "seed-notebook")
    assert "--enforce-eager" in seed and seed[seed.index("--max-model-len") + 1] == "2048"
    assert seed[seed.index("--gpu-memory-utilization") + 1] == "0.7000"


@pytest.mark.parametrize("config", verify.CONFIGS)
@pytest.mark.parametrize("model", ["qwen3-8b-lora", "mistral-small-24b-fp8", "gpt-oss-20b", "qwen25-vl-7b"])
def test_vllms_parser_accepts_every_measurement_argv(model: str, config: str) -> None:
    import_vllm_parser()
    validate_argv(_argv(PLANS[model], config))


def test_a_hosts_own_flags_come_last_in_every_configuration_and_pass_vllms_parser() -> None:
    """The GPU host's wheels lack FlashInfer's gated-delta-net prefill kernel: its measurements
    add vLLM's Triton backend, which the plan leaves to vLLM."""
    import_vllm_parser()
    host = ("--gdn-prefill-backend=triton",)
    for config in verify.CONFIGS:
        argv = _argv(PLANS["qwen3-8b"], config, host_args=host)
        assert argv[-1] == host[0] and argv[:-1] == _argv(PLANS["qwen3-8b"], config)
        validate_argv(argv)
    with pytest.raises(ArgvRejected, match="gdn-prefill-backend"):
        validate_argv(_argv(PLANS["qwen3-8b"], host_args=("--gdn-prefill-backend=nonesuch",)))


def test_reads_the_h200_start_up_log() -> None:
    boot = parse_boot_log((REPO / "docs/gpu-logs/deepseek-v3-5l.log").read_text())
    assert boot.weights_gib == 49.65 and boot.weights_load_seconds == pytest.approx(1.486273)
    assert boot.available_kv_gib == 67.21 and boot.kv_tokens == 12_528_688
    assert (boot.graph_capture_seconds, boot.graph_gib) == (17.0, 2.29)
    assert (boot.engine_init_seconds, boot.compile_seconds) == (65.27, 24.15)


def test_reads_vllm_032s_merged_kv_line_and_eager_starts() -> None:
    text = (
        "INFO [gpu_model_runner.py:5150] Model loading took 1.1 GiB memory and 0.5 seconds\n"
        "INFO [kv_cache_utils.py:2328] GPU KV cache size: 1,234,567 tokens, Maximum concurrency for 8,192 tokens per request: 150.70x\n"
        "INFO [core.py:403] init engine (profile, create kv cache, warmup model) took 12.50 s\n"
    )
    boot = parse_boot_log(text)
    assert boot.kv_tokens == 1_234_567 and boot.max_concurrency == 150.7
    assert boot.engine_init_seconds == 12.5 and boot.compile_seconds is None and boot.graph_gib is None
    assert parse_boot_log("nothing useful") == BootFigures()


def test_percentiles_interpolate_like_numpy() -> None:
    import numpy as np

    values = [0.3, 0.1, 0.9, 0.5, 0.7, 0.2]
    for q in (0, 50, 95, 100):
        assert verify.percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert verify.percentile([], 50) is None


def _boot(tokens: int | None) -> BootFigures:
    return BootFigures(kv_tokens=tokens, weights_gib=15.27)


def test_verdict_fails_only_past_3_percent_below_the_plan() -> None:
    plan = PLANS["qwen3-8b"]
    predicted = plan.memory.token_capacity
    assert verify.judge(plan, _boot(int(predicted * 0.971)), 60.0, None, "").ok
    assert verify.judge(plan, _boot(int(predicted * 1.2)), 60.0, None, "").ok  # more room is no broken promise
    below = verify.judge(plan, _boot(int(predicted * 0.96)), 60.0, None, "")
    assert not below.ok and "below the plan's" in below.problems[0]
    assert not verify.judge(plan, _boot(None), None, None, "").ok
    other_settings = verify.judge(plan, _boot(int(predicted * 0.7)), 60.0, None, "", config="seed-notebook")
    assert other_settings.ok and other_settings.kv_ratio == pytest.approx(0.7, abs=1e-3)
    assert below.predicted_weights_gib == pytest.approx(plan.memory.weights_bytes_per_gpu / GIB, abs=1e-3)


def test_failed_load_requests_fail_the_verdict() -> None:
    plan = PLANS["qwen3-8b"]
    load = verify.load_figures([0.1, 0.2], 256, 1, 2.0, concurrency=2, prompt_tokens=16, max_tokens=128)
    verdict = verify.judge(plan, _boot(plan.memory.token_capacity), 60.0, load, "")
    assert not verdict.ok and "1 of 3 load-test requests failed" in verdict.problems
    assert load.output_tokens_per_second == 128.0 and load.ttft_p50_ms == 150.0


def test_newer_records_replace_older_ones_of_the_same_run() -> None:
    log = verify.MeasurementLog.model_validate_json((REPO / "tests/data/gpu_measurements.json").read_text())
    first = log.measurements[0]
    again = first.model_copy(update={"date": "2027-01-01"})
    merged = log.merged([again])
    assert len(merged.measurements) == len(log.measurements)
    assert merged.measurements[-1].date == "2027-01-01"


def test_ttft_is_held_to_the_slo_without_failing_the_verdict() -> None:
    plan = PLANS["qwen3-8b"]
    load = verify.load_figures([0.2, 0.4, 0.9], 384, 0, 1.0, concurrency=3, prompt_tokens=16, max_tokens=128)
    slow = verify.judge(plan, _boot(plan.memory.token_capacity), 60.0, load, "", slo_ttft_ms=500)
    fast = verify.judge(plan, _boot(plan.memory.token_capacity), 60.0, load, "", slo_ttft_ms=1000)
    assert (slow.slo_met, fast.slo_met, slow.ok) == (False, True, True)
    assert verify.judge(plan, _boot(plan.memory.token_capacity), 60.0, None, "", slo_ttft_ms=500).slo_met is None


def test_a_multimodal_plan_is_measured_only_as_text() -> None:
    verify.check_measurable(PLANS["qwen25-vl-7b"])  # language_model_only
    with_images = PLANS["qwen25-vl-7b"].model_copy(
        update={"vllm": PLANS["qwen25-vl-7b"].vllm.model_copy(update={"language_model_only": False})}
    )
    with pytest.raises(verify.VerifyRefused, match="measure its text path with language_model_only: true"):
        verify.check_measurable(with_images)
    verify.check_measurable(PLANS["qwen3-8b"])


FAMILY_PLANS = {p.model_name: p for p in load_and_plan(REPO / "examples/gpu/families/fleet.yaml")[1]}


@pytest.mark.parametrize("model", sorted(FAMILY_PLANS))
def test_todays_families_fleet_is_measurable_on_one_h200(model: str) -> None:
    """scripts/bench_gpu_families.sh runs these: each fits one H200 at TP 1 and can start as text."""
    plan = FAMILY_PLANS[model]
    verify.check_measurable(plan)
    assert plan.tensor_parallel_size == 1 and verify.emulate(plan, H200).gpu_memory_utilization == 0.9
    import_vllm_parser()
    validate_argv(_argv(plan))


def test_the_families_bench_script_runs_every_model_of_the_fleet() -> None:
    script = (REPO / "scripts/bench_gpu_families.sh").read_text()
    assert all(f" {name}" in script or f'"{name}' in script for name in FAMILY_PLANS)
    probes = sorted(p.name for p in (REPO / "examples/gpu/families/probes").iterdir())
    assert probes and all(f" {name}" in script or f'"{name}' in script for name in probes)


def test_a_hosts_flags_are_recorded_and_records_without_them_are_written_as_before() -> None:
    text = (REPO / "tests/data/gpu_measurements.json").read_text()
    log = verify.MeasurementLog.model_validate_json(text)
    assert log.model_dump_json(indent=1) + "\n" == text
    flagged = log.measurements[0].model_copy(update={"host_vllm_args": ["--gdn-prefill-backend=triton"]})
    assert verify.Measurement.model_validate_json(flagged.model_dump_json()).host_vllm_args == ["--gdn-prefill-backend=triton"]
