"""The image planner against SD3.5 Large Turbo measured on an H200 (random bf16 weights from the
bundled configs, 4 steps, guidance 0; `python -m llmfleet.scripts.image_gpu_bench --size N`): the memory it
plans must hold what the GPU used, within a few percent, at every measured size and batch."""

from __future__ import annotations

import json

import pytest

from llmfleet.model_store.planning.image import activation_bytes_per_image, component_bytes
from llmfleet.model_store.facts.pipelines import facts_from_record, read_known_pipeline
from tests.conftest import REPO

RECORDS = json.loads((REPO / "tests/data/image_gpu_measurements.json").read_text())["measurements"]
RUNS = [(record, run) for record in RECORDS for run in record["runs"]]
# Planned peak vs measured (torch.cuda.max_memory_allocated): under by at most 2 %, over by at most 6 %.
UNDER, OVER = 0.98, 1.06


@pytest.fixture(scope="module")
def facts():
    pipeline = RECORDS[0]["pipeline"]
    return facts_from_record(*read_known_pipeline(pipeline), source=f"bundled:{pipeline}")


def test_the_record_names_gpu_and_versions() -> None:
    assert {record["size"] for record in RECORDS} == {512, 768, 1024}
    for record in RECORDS:
        assert record["device"].startswith("NVIDIA") and record["versions"]["diffusers"][0].isdigit()
        assert (record["steps"], record["guidance_scale"]) == (4, 0.0)


def test_planned_weights_match_what_was_allocated(facts) -> None:
    planned = sum(component_bytes(facts, "bfloat16").values())
    for record in RECORDS:
        assert 0.98 <= planned / record["weights_allocated_bytes"] <= 1.02


@pytest.mark.parametrize(("record", "run"), RUNS, ids=lambda value: str(value.get("size") or value.get("batch")))
def test_planned_peak_holds_the_measured_peak(facts, record, run) -> None:
    planned = record["weights_allocated_bytes"] + run["batch"] * activation_bytes_per_image(facts, record["size"], 0.0)
    assert UNDER <= planned / run["peak_bytes"] <= OVER, (record["size"], run["batch"], planned / run["peak_bytes"])
