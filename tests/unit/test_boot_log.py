"""Boot phases from vLLM's start-up log, the key a compile cache is stored under, and the
BootSeconds metric records."""

from __future__ import annotations

import io
import json

import pytest

from llmfleet.containers.entrypoint.metrics import boot_emf_records
from llmfleet.containers.entrypoint.vllm_output import VllmOutput
from llmfleet.model_store.contract import telemetry
from llmfleet.model_store.ops.boot_log import boot_record, BootFigures, describe_boot, parse_boot_log
from llmfleet.model_store.store.compile_cache import compile_cache_key
from llmfleet.model_store.planning.fleet import load_and_plan
from tests.conftest import REPO

# vLLM 0.32's CPU build prints no memory figure and no compilation time.
CPU_LOG = """\
(Worker pid=1411) INFO 12-01 10:14:42 [default_loader.py:501] Loading weights took 0.01 seconds
(EngineCore pid=1351) INFO 12-01 10:15:32 [kv_cache_utils.py:2327] CPU KV cache size: 2,097,152 tokens, Maximum concurrency for 512 tokens per request: 4096.00x
(EngineCore pid=1351) INFO 12-01 10:15:33 [core.py:402] init engine (profile, create kv cache, warmup model) took 49.37 s
"""


def test_the_gpu_log_gives_every_phase() -> None:
    figures = parse_boot_log((REPO / "docs/gpu-logs/llama31-8b.log").read_text())
    record = boot_record(figures, sync_seconds=3.2, cache_seconds=0.5, vllm_ready_seconds=110.0, compile_cache="miss")

    assert record.phases == {
        "sync": 3.2, "compile_cache": 0.5, "engine_start": 58.97, "weights": 3.3, "compile": 22.79,
        "profile_and_graphs": 24.94, "total": 113.7,
    }  # fmt: skip
    assert list(record.phases) == ["sync", "compile_cache", "engine_start", "weights", "compile", "profile_and_graphs", "total"]
    assert describe_boot(record) == (
        "114 s (sync 3, compile cache 0, engine start 59, weights 3, compile 23, profile and graphs 25); compile cache miss"
    )


def test_the_cpu_log_gives_what_it_reports() -> None:
    figures = parse_boot_log(CPU_LOG)
    assert (figures.weights_load_seconds, figures.engine_init_seconds, figures.compile_seconds) == (0.01, 49.37, None)
    assert figures.kv_tokens == 2_097_152 and figures.weights_gib is None

    record = boot_record(figures, sync_seconds=1.0, cache_seconds=0.2, vllm_ready_seconds=60.0, compile_cache="restored", cache_version="abc")
    assert "compile" not in record.phases
    assert record.phases["profile_and_graphs"] == 49.37
    assert describe_boot(record).endswith("compile cache restored (abc)")


def test_a_log_without_the_lines_leaves_the_phases_to_the_container() -> None:
    record = boot_record(BootFigures(), sync_seconds=2.0, cache_seconds=0.0, vllm_ready_seconds=30.0, compile_cache="off")
    assert record.phases == {"sync": 2.0, "compile_cache": 0.0, "engine_start": 30.0, "total": 32.0}


def test_boot_phases_become_one_emf_record_each() -> None:
    record = boot_record(BootFigures(weights_load_seconds=3.0), sync_seconds=1.0, cache_seconds=0.0, vllm_ready_seconds=10.0, compile_cache="miss")
    records = boot_emf_records(record, model="m", stage="prod", target="ecs", timestamp_ms=1_700_000_000_000)

    assert {r["Phase"]: r[telemetry.BOOT_SECONDS] for r in records} == record.phases
    for emf in records:
        (directive,) = emf["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == telemetry.NAMESPACE
        assert directive["Dimensions"] == [["Model", "Stage", "Target", "Phase"]]
        assert directive["Metrics"] == [{"Name": "BootSeconds", "Unit": "Seconds"}]
        assert (emf["Model"], emf["Stage"], emf["Target"]) == ("m", "prod", "ecs")
        json.dumps(emf)


def test_vllm_output_passes_every_line_and_keeps_the_start_up_lines() -> None:
    reader, writer = io.BytesIO(), io.BytesIO()
    reader.write(b"starting\nKV cache \xff\n")
    reader.seek(0)
    output = VllmOutput(reader, writer)
    output.start()
    output.join()

    assert writer.getvalue() == b"starting\nKV cache \xff\n"
    assert output.ready() == "starting\nKV cache \ufffd\n"


@pytest.fixture(scope="module")
def plan():
    _, plans = load_and_plan(REPO / "fleet.yaml")
    return plans[0]


def test_the_compile_cache_key_changes_with_what_invalidates_a_cache(plan) -> None:
    key = compile_cache_key(plan, vllm_version="0.26.0", accelerator="NVIDIA H200, 9.0", model_path="/m")

    assert key == compile_cache_key(plan, vllm_version="0.26.0", accelerator="NVIDIA H200, 9.0", model_path="/m")
    assert key.factors["revision"] == plan.revision and key.factors["accelerator"] == "NVIDIA H200, 9.0"
    changed = [
        compile_cache_key(plan, vllm_version="0.26.1", accelerator="NVIDIA H200, 9.0", model_path="/m"),
        compile_cache_key(plan, vllm_version="0.26.0", accelerator="NVIDIA L40S, 8.9", model_path="/m"),
        compile_cache_key(plan.model_copy(update={"revision": "v2"}), vllm_version="0.26.0", accelerator="NVIDIA H200, 9.0", model_path="/m"),
        compile_cache_key(
            plan.model_copy(update={"vllm": plan.vllm.model_copy(update={"max_num_seqs": plan.vllm.max_num_seqs + 1})}),
            vllm_version="0.26.0",
            accelerator="NVIDIA H200, 9.0",
            model_path="/m",
        ),
        compile_cache_key(plan, vllm_version="0.26.0", accelerator="NVIDIA H200, 9.0", model_path="/opt/ml/model"),
    ]
    assert len({key.key, *(k.key for k in changed)}) == 6


def test_the_compile_cache_key_ignores_the_media_domain_allowlist(plan) -> None:
    def key(domains: list[str] | None) -> str:
        settings = plan.vllm.model_copy(update={"allowed_media_domains": domains})
        return compile_cache_key(plan.model_copy(update={"vllm": settings}), vllm_version="1", accelerator="a", model_path="/m").key

    assert key(["images.example.com"]) == key(["cdn.example.org", "images.example.com"]) == key(None)


def test_the_compile_cache_key_ignores_names_and_timeouts(plan) -> None:
    renamed = plan.vllm.model_copy(update={"served_model_name": "other", "shutdown_timeout": 999})
    assert (
        compile_cache_key(plan.model_copy(update={"vllm": renamed}), vllm_version="1", accelerator="a", model_path="/m").key
        == compile_cache_key(plan, vllm_version="1", accelerator="a", model_path="/m").key
    )
