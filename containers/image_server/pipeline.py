"""The diffusers pipeline: loaded once from the synced, verified model directory; one call
generates a batch of same-shaped requests. torch and diffusers are imported here only."""

from __future__ import annotations

import base64
import io
import logging
import secrets
from collections.abc import Sequence

from llmfleet.containers.image_server.validation import MAX_SEED, ImageRequest
from llmfleet.model_store.contract.plan import ImageSettings

log = logging.getLogger(__name__)


def png_base64(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class ImagePipeline:
    """A loaded pipeline on the plan's device and placement."""

    def __init__(self, model_dir: str, settings: ImageSettings):
        import torch
        from diffusers import DiffusionPipeline

        self.torch = torch
        dtype = getattr(torch, settings.dtype)
        self.pipe = DiffusionPipeline.from_pretrained(model_dir, torch_dtype=dtype, local_files_only=True)
        self.pipe.set_progress_bar_config(disable=True)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if settings.offload == "model" and self.device == "cuda":
            self.pipe.enable_model_cpu_offload()  # the plan found no GPU that holds every component
        else:
            self.pipe.to(self.device)
        log.info("pipeline %s loaded on %s (%s, offload %s)", type(self.pipe).__name__, self.device, settings.dtype, settings.offload)

    def generate(self, batch: Sequence[ImageRequest]) -> list[list[str]]:
        """Base64 PNGs for each request of a batch of one shape, in order. A request's image j
        uses seed + j, so a seeded request gives the same images alone or batched."""
        width, height, steps, guidance = batch[0].shape
        prompts, generators = [], []
        for request in batch:
            seed = request.seed if request.seed is not None else secrets.randbelow(MAX_SEED - 64)
            for j in range(request.n):
                prompts.append(request.prompt)
                generators.append(self.torch.Generator(device="cpu").manual_seed(seed + j))
        images = self.pipe(
            prompt=prompts,
            width=width,
            height=height,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=generators,
            output_type="pil",
        ).images
        encoded, start = [], 0
        for request in batch:
            encoded.append([png_base64(image) for image in images[start : start + request.n]])
            start += request.n
        return encoded
