"""`llmfleet verify`'s machinery against a real vLLM (the CPU build): the plan's argv with
random weights from config.json alone and no tokenizer, vLLM's KV figure read from its log,
a token-id load test, the server's whole process group gone afterwards. (On a GPU the same
path measured the records in tests/data/gpu_measurements.json.)"""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest

from llmfleet.model_store.facts.families import facts_from_config
from llmfleet.model_store.facts.lock import FactsRecord
from llmfleet.model_store.planning.text import kv_bytes_per_token
from llmfleet.model_store.ops import verify
from llmfleet.scripts.standin_model import standin_serving_plan
from llmfleet.scripts.verify_cli import measure

CPU_KV_GIB = 1  # VLLM_CPU_KVCACHE_SPACE


@pytest.fixture(scope="module")
def verified(standin_model: Path, tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VLLM_CPU_KVCACHE_SPACE", str(CPU_KV_GIB))
        plan = standin_serving_plan(standin_model, model_name="tiny")
        config = json.loads((standin_model / "config.json").read_text())
        record = FactsRecord(origin="local", location=str(standin_model), revision=None, config=config)
        gpu = verify.LocalGpu(name=plan.gpu_name, memory_bytes=plan.gpu_memory_bytes, count=1)
        work = tmp_path_factory.mktemp("verify")
        verdict, log = measure(
            plan, record, None, gpu, work, config="plan", boot_timeout=300,
            load_requests=12, prompt_tokens=48, max_tokens=8, concurrency=3, slo_ttft_ms=None,
        )  # fmt: skip
        # The server and its engine name the measurement's model directory (under `work`).
        left = [p for p in psutil.process_iter(["cmdline"]) if str(work) in " ".join(p.info["cmdline"] or [])]
    return plan, config, verdict, log, left


def test_vllms_kv_figure_is_read_and_equals_the_planners_bytes_per_token(verified) -> None:
    _, config, verdict, log, _ = verified
    assert "CPU KV cache size" in log and "load_format" in log and "'skip_tokenizer_init': True" in log
    per_token = kv_bytes_per_token(facts_from_config(config), "auto", "bfloat16")
    assert verdict.measured_kv_tokens == CPU_KV_GIB * 2**30 // per_token
    assert verdict.boot.engine_init_seconds is not None and verdict.boot_seconds > 0


def test_the_load_test_sends_token_id_prompts_and_times_first_tokens(verified) -> None:
    _, _, verdict, _, _ = verified
    load = verdict.load
    assert (load.requests, load.failed, load.concurrency) == (12, 0, 3)
    assert load.output_tokens_per_second > 0 and 0 < load.ttft_p50_ms <= load.ttft_p95_ms


def test_the_server_is_gone_afterwards(verified) -> None:
    *_, left = verified
    assert not [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
