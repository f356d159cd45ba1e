"""The GPU catalog: every price has a dated source, the new instances hold their published
shapes, and `llmfleet catalog` prints what the planner chooses from."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from llmfleet.model_store.planning.catalog import (
    B200,
    DERIVED_KEYS,
    EC2_PRICE_SOURCE,
    Gpu,
    GpuInstance,
    H100,
    H200,
    instance,
    INSTANCES,
    L4,
    L40S,
    SAGEMAKER_PRICE_SOURCE,
    with_gpu,
)
from llmfleet.scripts.cli import app

runner = CliRunner()
DATE = re.compile(r"\b20\d\d-(0[1-9]|1[0-2])\b")  # 2025-10, 2026-01-21


def test_instance_names_are_unique() -> None:
    names = [i.name for i in INSTANCES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("candidate", INSTANCES, ids=lambda i: i.name)
def test_every_price_is_positive_and_names_a_dated_source(candidate: GpuInstance) -> None:
    assert candidate.price_usd_hour > 0
    assert DATE.search(candidate.price_source), candidate.price_source
    assert DATE.search(candidate.sagemaker_price_source), candidate.sagemaker_price_source
    if candidate.sagemaker_price_usd_hour is not None:
        assert candidate.sagemaker_price_usd_hour > 0


@pytest.mark.parametrize("candidate", INSTANCES, ids=lambda i: i.name)
def test_sagemaker_names_are_ml_and_the_ec2_name(candidate: GpuInstance) -> None:
    if candidate.sagemaker_price_usd_hour is None:
        assert candidate.sagemaker_name is None
    else:
        assert candidate.sagemaker_name == f"ml.{candidate.name}"
        assert instance(candidate.sagemaker_name) is candidate
    assert instance(candidate.name) is candidate


def test_every_g6e_size_with_its_gpu_count() -> None:
    expected = {
        "xlarge": 1, "2xlarge": 1, "4xlarge": 1, "8xlarge": 1, "12xlarge": 4, "16xlarge": 1, "24xlarge": 4, "48xlarge": 8,
    }  # fmt: skip
    g6e = {i.name.split(".")[1]: i for i in INSTANCES if i.family == "g6e"}
    assert {size: i.gpu_count for size, i in g6e.items()} == expected
    assert all(i.gpu is L40S and i.vcpus == 4 * int(size.removesuffix("xlarge") or 1) for size, i in g6e.items())


@pytest.mark.parametrize(
    ("name", "gpu", "count"),
    [("p5.4xlarge", H100, 1), ("p5.48xlarge", H100, 8), ("p5en.48xlarge", H200, 8), ("p6-b200.48xlarge", B200, 8)],
)
def test_p_instances_hold_their_gpus(name: str, gpu: Gpu, count: int) -> None:
    chosen = instance(name)
    assert (chosen.gpu, chosen.gpu_count) == (gpu, count)


def test_gpu_memory_is_nvidia_smi_memory_total() -> None:
    assert H200.memory_mib == 143_771
    assert B200.memory_mib == 183_359
    assert instance("p6-b200.48xlarge").gpu_memory_bytes == 183_359 * 2**20
    assert instance("p5en.48xlarge").gpu_memory_bytes == instance("p5e.48xlarge").gpu_memory_bytes


def test_blackwell_adds_fp4_and_compute_capability_10() -> None:
    assert (B200.compute_capability, B200.fp8, B200.fp4) == (10.0, True, True)
    assert not any(gpu.fp4 for gpu in (L4, L40S, H100, H200))
    assert [i.name for i in INSTANCES if i.gpu.fp4] == ["p6-b200.48xlarge"]


def test_positional_construction_keeps_the_default_sources() -> None:
    gpu = Gpu("test GPU", 24_000, 8.9, fp8=True, bf16=True)
    made = GpuInstance("g6.test", gpu, 1, 8, 64, 100, 1.0, None)
    assert (made.price_source, made.sagemaker_price_source, made.sagemaker_name) == (
        EC2_PRICE_SOURCE,
        SAGEMAKER_PRICE_SOURCE,
        None,
    )
    assert gpu.fp4 is False


@pytest.mark.parametrize("candidate", INSTANCES, ids=lambda i: i.name)
def test_record_round_trips_through_json(candidate: GpuInstance) -> None:
    record = json.loads(json.dumps(candidate.to_record()))
    assert GpuInstance.from_record(record) == candidate
    assert record["gpu_memory_bytes"] == candidate.gpu_memory_bytes
    assert record["sagemaker_name"] == candidate.sagemaker_name


def test_gpu_filter_ignores_case_and_matches_substrings() -> None:
    assert [i.name for i in with_gpu("h200")] == ["p5e.48xlarge", "p5en.48xlarge"]
    assert with_gpu("A100") == with_gpu(" a100 ")
    assert with_gpu("no such gpu") == ()


def test_cli_json_lists_every_field_of_every_instance() -> None:
    result = runner.invoke(app, ["catalog", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert [GpuInstance.from_record(record) for record in document] == list(INSTANCES)
    fields = [
        "name", "gpu", "gpu_count", "vcpus", "memory_gib", "nvme_gb", "price_usd_hour",
        "sagemaker_price_usd_hour", "price_source", "sagemaker_price_source", *DERIVED_KEYS,
    ]  # fmt: skip
    assert all(list(record) == fields for record in document)
    assert list(document[0]["gpu"]) == [
        "name", "memory_mib", "compute_capability", "fp8", "bf16", "fp4", "hbm_gb_per_s", "tflops_16bit", "tflops_fp8", "speed_source",
    ]


def test_cli_gpu_filter() -> None:
    result = runner.invoke(app, ["catalog", "--json", "--gpu", "h200"])
    assert result.exit_code == 0, result.output
    assert [record["name"] for record in json.loads(result.stdout)] == ["p5e.48xlarge", "p5en.48xlarge"]


def test_cli_unknown_gpu_is_bad_input() -> None:
    result = runner.invoke(app, ["catalog", "--gpu", "RTX 9090"])
    assert result.exit_code == 2
    assert "matches no GPU in the catalog" in result.output and "NVIDIA B200" in result.output
    assert "Traceback" not in result.output


def test_cli_table_fits_100_columns_and_names_every_price_source() -> None:
    result = runner.invoke(app, ["catalog"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert "…" not in result.stdout
    names = {i.name for i in INSTANCES}
    rows = {cells[0]: cells for cells in map(str.split, lines) if cells and cells[0] in names}
    assert list(rows) == [i.name for i in INSTANCES]
    assert rows["p6-b200.48xlarge"][1:] == ["-", "8x", "B200", "179.1", "10.0", "FP8", "FP4", "30720", "113.93", "-"]
    assert rows["p5en.48xlarge"][1] == "ml.p5en.48xlarge"
    text = " ".join(result.stdout.split())
    for source in {i.price_source for i in INSTANCES} | {i.sagemaker_price_source for i in INSTANCES}:
        assert " ".join(source.split()) in text, source


def test_cli_help_says_what_the_catalog_is_for() -> None:
    result = runner.invoke(app, ["catalog", "--help"])
    assert result.exit_code == 0
    assert "cheapest instance" in " ".join(result.output.split())
