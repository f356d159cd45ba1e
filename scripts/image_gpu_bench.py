"""Measure an image pipeline on one GPU with random weights, and compare with the image planner.

Builds the pipeline from the committed configs (default: the bundled SD3.5 Large Turbo,
model_store/known_configs/pipelines/, see its SOURCE) directly on the device in bf16, with the
stand-in's offline tokenizers (scripts/standin_pipeline.py): no network, no checkpoint. After one
warm-up image it measures seconds per image and peak memory (torch.cuda.max_memory_allocated) at
SIZE px, STEPS steps, guidance 0, for batch 1 and the planned batch, and writes one JSON record:
versions, figures, the planner's predictions and their ratios.

    python -m llmfleet.scripts.image_gpu_bench --out image-gpu.json            # on the GPU machine
    python -m llmfleet.scripts.image_gpu_bench --pipeline DIR --device cpu --size 64 --steps 2 --batch 2 --out x.json

Random weights make noise, not pictures: the figures are the memory and speed of the shapes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from llmfleet.model_store.planning.image import activation_bytes_per_image, component_bytes
from llmfleet.model_store.facts.pipelines import (
    facts_from_record,
    known_pipeline_dir,
    read_known_pipeline,
    read_pipeline,
)

DEFAULT_PIPELINE = "stabilityai/stable-diffusion-3.5-large-turbo"
# The example fleet's planned batch for it (fleet.yaml: target_concurrency 4 images in flight).
DEFAULT_BATCH = 4
PROMPT = "a photograph of an astronaut riding a horse"


def _facts(folder: Path, hf_id: str | None):
    """The planner's facts for the folder: a bundled copy (weights.json) or a saved pipeline."""
    model_index, components = read_known_pipeline(hf_id) if hf_id else read_pipeline(folder)
    return facts_from_record(model_index, components, str(folder))


@contextlib.contextmanager
def _default_dtype(dtype):
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_pipeline(folder: Path, device: str):
    """StableDiffusion3Pipeline from the folder's configs, parameters made on `device` in bf16."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    from llmfleet.scripts.standin_pipeline import tiny_tokenizers

    def config(name: str) -> dict[str, Any]:
        return json.loads((folder / name / "config.json").read_text())

    torch.manual_seed(0)
    with torch.device(device), _default_dtype(torch.bfloat16):
        components = {
            "transformer": SD3Transformer2DModel.from_config(config("transformer")),
            "vae": AutoencoderKL.from_config(config("vae")),
            "text_encoder": CLIPTextModelWithProjection(CLIPTextConfig(**config("text_encoder"))),
            "text_encoder_2": CLIPTextModelWithProjection(CLIPTextConfig(**config("text_encoder_2"))),
            "text_encoder_3": T5EncoderModel(T5Config(**config("text_encoder_3"))),
        }
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(json.loads((folder / "scheduler" / "scheduler_config.json").read_text()))
    pipe = StableDiffusion3Pipeline(scheduler=scheduler, **components, **tiny_tokenizers())
    pipe.to(device, torch.bfloat16)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _run(pipe, device: str, batch: int, size: int, steps: int) -> dict[str, float]:
    import torch

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    pipe(
        prompt=[PROMPT] * batch, width=size, height=size, num_inference_steps=steps, guidance_scale=0.0,
        generator=[torch.Generator("cpu").manual_seed(i) for i in range(batch)], output_type="pil",
    )  # fmt: skip
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {
        "batch": batch,
        "seconds": round(seconds, 3),
        "seconds_per_image": round(seconds / batch, 3),
        "peak_bytes": torch.cuda.max_memory_allocated() if cuda else None,
    }


def measure(folder: Path, hf_id: str | None, *, device: str, size: int, steps: int, batch: int) -> dict[str, Any]:
    """Build, warm up, measure batch 1 and `batch`; the record, with the planner's predictions."""
    import torch

    facts = _facts(folder, hf_id)
    built = time.perf_counter()
    pipe = build_pipeline(folder, device)
    build_seconds = time.perf_counter() - built
    cuda = device.startswith("cuda")
    weights_allocated = torch.cuda.memory_allocated() if cuda else None
    _run(pipe, device, 1, size, steps)  # warm-up: kernels, allocator pools
    runs = [_run(pipe, device, b, size, steps) for b in sorted({1, batch})]
    predicted_weights = sum(component_bytes(facts, "bfloat16").values())
    per_image = activation_bytes_per_image(facts, size, 0.0)
    for run in runs:
        run["predicted_peak_bytes"] = predicted_weights + run["batch"] * per_image
        if run["peak_bytes"]:
            run["measured_activation_bytes"] = run["peak_bytes"] - weights_allocated
            run["peak_ratio_measured_to_predicted"] = round(run["peak_bytes"] / run["predicted_peak_bytes"], 3)
    return {
        "pipeline": hf_id or str(folder),
        "configs": str(folder),
        "weights": "random, made on the device in bf16",
        "device": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
        "versions": {
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "diffusers": version("diffusers"),
            "transformers": version("transformers"),
            "python": platform.python_version(),
        },
        "size": size,
        "steps": steps,
        "guidance_scale": 0.0,
        "planned_batch": batch,
        "build_seconds": round(build_seconds, 2),
        "weights_allocated_bytes": weights_allocated,
        "predicted_weights_bytes": predicted_weights,
        "predicted_activation_bytes_per_image": per_image,
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="Where to write the JSON record.")
    parser.add_argument("--pipeline", default=DEFAULT_PIPELINE, help="A bundled pipeline id, or a folder of configs (model_index.json ...).")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="The planned batch (images in flight).")
    args = parser.parse_args(argv)
    folder = Path(args.pipeline)
    hf_id = None
    if not (folder / "model_index.json").is_file():  # a bundled id: configs and weights.json in the repository
        hf_id, folder = args.pipeline, known_pipeline_dir(args.pipeline)
    record = measure(folder, hf_id, device=args.device, size=args.size, steps=args.steps, batch=args.batch)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
