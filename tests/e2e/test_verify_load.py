"""`llmfleet verify --load`'s machinery against a real vLLM (the CPU build): the plan's argv with
random weights and the word tokenizer built from the vocabulary size, an open-loop load sent by
vLLM's own `vllm bench serve` from a custom dataset of the load's lengths, its saved result read
back. (The CPU figures prove the path; the GPU records are in tests/data/gpu_load_measurements.json.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmfleet.model_store import load_verify, verify
from llmfleet.model_store.lock import FactsRecord
from llmfleet.model_store.manifest import LoadSpec
from llmfleet.scripts.standin_model import standin_serving_plan
from llmfleet.scripts.verify_cli import measure_load

LOAD = LoadSpec.model_validate(
    {
        "requests_per_second": 4,
        "prompt_tokens": {"p50": 40, "p95": 80},
        "output_tokens": {"p50": 6, "p95": 12},
        "slo": {"ttft_ms": 60_000, "itl_ms": 10_000},
    }
)
POINTS = [load_verify.LoadPoint(name="planned", requests_per_second=4), load_verify.LoadPoint(name="double", requests_per_second=8)]
SECONDS = 5  # 20 and 40 requests
MOST = 100


@pytest.fixture(scope="module")
def loaded(standin_model: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch_module):
    monkeypatch_module.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    plan = standin_serving_plan(standin_model, model_name="tiny", lora=False)
    config = json.loads((standin_model / "config.json").read_text())
    record = FactsRecord(origin="local", location=str(standin_model), revision=None, config=config)
    gpu = verify.LocalGpu(name=plan.gpu_name, memory_bytes=plan.gpu_memory_bytes, count=1)
    flags = load_verify.sweep_flags(plan, gpu.name, gpu.memory_bytes, grid=False)[0]
    work = tmp_path_factory.mktemp("verify-load") / "tiny" / "plan"
    work.mkdir(parents=True)
    seen = []
    checks, log = measure_load(
        plan, record, gpu, work, flags=flags, points=POINTS, load=LOAD, seconds=SECONDS, most_requests=MOST,
        repeats=1, boot_timeout=300, on_check=seen.append,
    )  # fmt: skip
    return plan, config, checks, log, seen, work


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_the_server_got_the_word_tokenizer_and_the_plans_flags(loaded) -> None:
    plan, config, _, log, _, work = loaded
    assert f"tokenizer-{config['vocab_size']}" in log and "'skip_tokenizer_init': True" not in log
    assert f"'max_num_seqs': {plan.vllm.max_num_seqs}" in log and f"'max_num_batched_tokens': {plan.vllm.max_num_batched_tokens}" in log
    assert (work.parent.parent / f"tokenizer-{config['vocab_size']}" / "tokenizer.json").is_file()


def test_each_point_is_one_vllm_bench_serve_run_with_every_request_answered(loaded) -> None:
    _, _, checks, _, seen, _ = loaded
    assert [c.point.name for c in checks] == ["planned", "double"] and seen == checks
    for check in checks:
        m = check.measured
        assert (m.requests, m.failed) == (load_verify.request_count(check.point.requests_per_second, SECONDS, MOST), 0)
        assert 0 < m.ttft_p50_ms <= m.ttft_p95_ms and 0 < m.itl_p50_ms <= m.itl_p95_ms and m.itl_mean_ms > 0
        assert m.output_tokens_per_second > 0 and m.goodput is not None and m.goodput <= m.request_throughput + 1e-9
        assert check.kv_tokens and check.boot_seconds > 0


def test_the_load_has_the_workloads_exact_lengths(loaded) -> None:
    """Prompts of n words are n tokens to vllm bench's client tokenizer, and EOS is ignored: the
    measured means are those of the drawn workload."""
    plan, _, checks, _, _, _ = loaded
    for seed, check in enumerate(checks):
        n = check.measured.requests
        pairs = load_verify.workload(LOAD, n, max_model_len=plan.vllm.max_model_len, seed=seed)
        assert check.measured.mean_prompt_tokens == pytest.approx(sum(p for p, _ in pairs) / n, abs=0.05)
        assert check.measured.mean_output_tokens == pytest.approx(sum(o for _, o in pairs) / n, abs=0.05)
