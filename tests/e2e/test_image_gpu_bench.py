"""scripts/image_gpu_bench.py's path on CPU with the tiny stand-in's configs: it builds the pipeline
from configs with random weights, generates, and writes the record the GPU run will write."""

from __future__ import annotations

import json
from pathlib import Path

from llmfleet.model_store.planning.image import activation_bytes_per_image, component_bytes
from llmfleet.model_store.facts.pipelines import facts_from_record, read_pipeline
from llmfleet.scripts import image_gpu_bench
from llmfleet.scripts.standin_pipeline import make_tiny_pipeline


def test_the_bench_runs_on_cpu_and_records_both_batches_with_predictions(tmp_path: Path):
    pipeline = make_tiny_pipeline(tmp_path / "pipeline")
    out = tmp_path / "record.json"
    image_gpu_bench.main(["--pipeline", str(pipeline), "--device", "cpu", "--size", "64", "--steps", "2", "--batch", "2", "--out", str(out)])
    record = json.loads(out.read_text())
    facts = facts_from_record(*read_pipeline(pipeline), source=str(pipeline))
    assert record["predicted_weights_bytes"] == sum(component_bytes(facts, "bfloat16").values())
    assert record["predicted_activation_bytes_per_image"] == activation_bytes_per_image(facts, 64, 0.0)
    assert [run["batch"] for run in record["runs"]] == [1, 2]
    assert all(run["seconds"] > 0 and run["peak_bytes"] is None for run in record["runs"])  # no CUDA allocator on CPU
    assert record["runs"][1]["predicted_peak_bytes"] > record["runs"][0]["predicted_peak_bytes"]
    assert set(record["versions"]) >= {"torch", "diffusers", "transformers"}


def test_the_default_is_the_bundled_sd35_large_turbo():
    folder = image_gpu_bench.known_pipeline_dir(image_gpu_bench.DEFAULT_PIPELINE)
    transformer = json.loads((folder / "transformer" / "config.json").read_text())
    assert (transformer["num_layers"], transformer["num_attention_heads"], transformer["joint_attention_dim"]) == (38, 38, 4096)
