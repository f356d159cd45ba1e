"""`llmfleet verify --load`'s machinery against a real vLLM (the CPU build): a fleet whose model
has a `load:` section, its plan's argv with random weights and the word tokenizer built from the
vocabulary size, an open-loop load at each of the plan's load points sent by vLLM's own
`vllm bench serve` from a custom dataset of the load's lengths, each check recorded as it is
measured. (The CPU figures prove the path; the GPU records are tests/data/gpu_load_measurements.json.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmfleet.model_store.ops import load_verify, verify
from llmfleet.model_store.facts.architectures import read_checkpoint_architecture
from llmfleet.model_store.planning.fleet import load_fleet_and_lock, plan_with_lock
from llmfleet.model_store.contract.manifest import LoadSpec
from llmfleet.model_store.planning.standin import standin_plan
from llmfleet.scripts.verify_cli import _verify_loads

LOAD = {
    "requests_per_second": 3,
    "prompt_tokens": {"p50": 40, "p95": 80},
    "output_tokens": {"p50": 6, "p95": 12},
    "slo": {"ttft_ms": 60_000, "itl_ms": 10_000},
}
SECONDS = 8  # 24 requests at the planned 3 requests/s
MOST = 40  # the scaling target of a tiny model on a GPU is hundreds a second: at most 40 at once here


@pytest.fixture(scope="module")
def loaded(standin_model: Path, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("verify-load")
    fleet_file = work / "fleet.yaml"
    fleet_file.write_text(
        json.dumps(
            {
                "name": "load",
                "models": [{"name": "tiny", "source": str(standin_model), "max_model_len": 512, "load": LOAD}],
            }
        )
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
        manifest, lock = load_fleet_and_lock(fleet_file)
        arch = read_checkpoint_architecture(standin_model)
        plans = {p.model_name: standin_plan(p, arch) for p in plan_with_lock(manifest, lock)}
        plan = plans["tiny"]
        gpu = verify.LocalGpu(name=plan.gpu_name, memory_bytes=plan.gpu_memory_bytes, count=1)
        record = work / "record.json"
        checks = _verify_loads(
            manifest,
            lock,
            plans,
            ["tiny"],
            gpu,
            keep=work / "keep",
            record=record,
            compare=False,
            sweep=False,
            seconds=SECONDS,
            most_requests=MOST,
            repeats=1,
            boot_timeout=300,
            skip_unfit=False,
        )
    log = (work / "keep" / "tiny" / "plan" / "server.log").read_text()
    return plan, checks, log, record, work


def test_the_server_ran_the_plans_flags_with_the_word_tokenizer(loaded) -> None:
    plan, _, log, _, work = loaded
    vocab = json.loads((work / "keep" / "tiny" / "plan" / "model" / "config.json").read_text())["vocab_size"]
    assert (work / "keep" / f"tokenizer-{vocab}" / "tokenizer.json").is_file()
    assert f"tokenizer-{vocab}" in log and "'skip_tokenizer_init': True" not in log
    assert f"'max_num_seqs': {plan.vllm.max_num_seqs}" in log


def test_each_load_point_is_one_bench_run_with_every_request_answered(loaded) -> None:
    plan, checks, _, _, _ = loaded
    points = load_verify.load_points(plan)
    assert [c.point for c in checks] == points and len(points) == 2
    for check in checks:
        m = check.measured
        assert (m.requests, m.failed) == (load_verify.request_count(check.point.requests_per_second, SECONDS, MOST), 0)
        assert 0 < m.ttft_p50_ms <= m.ttft_p95_ms and 0 < m.itl_p50_ms <= m.itl_p95_ms and m.itl_mean_ms > 0
        assert m.output_tokens_per_second > 0 and m.goodput is not None and m.goodput <= m.request_throughput + 1e-9
        assert check.kv_tokens and check.boot_seconds > 0 and check.flags.config == "plan"


def test_the_load_has_the_workloads_exact_lengths(loaded) -> None:
    """Prompts of n words are n tokens to the bench's tokenizer and EOS is ignored: the measured
    mean lengths are those of the drawn workload."""
    plan, checks, _, _, _ = loaded
    for seed, check in enumerate(checks):
        n = check.measured.requests
        pairs = load_verify.workload(LoadSpec.model_validate(LOAD), n, max_model_len=plan.vllm.max_model_len, seed=seed)
        assert check.measured.mean_prompt_tokens == pytest.approx(sum(p for p, _ in pairs) / n, abs=0.05)
        assert check.measured.mean_output_tokens == pytest.approx(sum(o for _, o in pairs) / n, abs=0.05)


def test_every_check_is_recorded_and_predicted_again_from_the_record(loaded) -> None:
    _, checks, _, record, _ = loaded
    log = load_verify.LoadLog.model_validate_json(record.read_text())
    assert [m.check for m in log.measurements] == checks
    for measurement in log.measurements:
        figures = load_verify.compared(measurement)
        assert set(figures) == set(load_verify.FIGURES)
        assert figures["ttft_p95_ms"][1] == measurement.check.measured.ttft_p95_ms
