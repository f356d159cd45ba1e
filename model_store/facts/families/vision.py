"""The vision encoder of a multimodal checkpoint: its weights, which vLLM loads beside the LM.

Counted from `vision_config` as a ViT (patch embedding, position embeddings, `layers` x
(attention + MLP + 2 norms)) plus the projector into the LM's hidden size, per encoder type
(SigLIP/CLIP, Kimi-K2.5's MoonViT: fc1/fc2 MLP with biases; Pixtral, Qwen2.5-VL: gated MLP;
Qwen and Kimi-K2.5 merge 2x2 patches before projecting).
"""

from __future__ import annotations

from collections.abc import Callable

from llmfleet.model_store.facts.families.config import ConfigView
from llmfleet.model_store.facts.families.registry import Projector, VisionParts

# `vision_config.model_type`s of encoders with a gated (SwiGLU) MLP, whichever wrapper holds
# them (Pixtral in Mistral-3 and LLaVA wrappers).
_GATED_ENCODERS = {"pixtral", "qwen2_5_vl", "gemma4_vision"}


def _merged_patches(vision: ConfigView) -> int:
    """Patches merged into one LM token: `spatial_merge_size` squared, or Kimi's
    `merge_kernel_size` [height, width]."""
    kernel = vision.int_list("merge_kernel_size")
    if kernel is None:
        return vision.int("spatial_merge_size", 1) ** 2
    if len(kernel) != 2 or min(kernel) < 1:
        raise vision.error("merge_kernel_size", f"must be [height, width] of positive sizes, got {kernel!r}")
    return kernel[0] * kernel[1]


def vision_parameters(vision: ConfigView, text_hidden: int, tower: VisionParts) -> int:
    # Qwen2-VL's vision_config has the encoder's width in `embed_dim` and the LM's in `hidden_size`;
    # Kimi-K2.5's MoonViT names its own `vt_hidden_size`, `vt_num_hidden_layers`, `vt_intermediate_size`.
    h = vision.int("embed_dim", None) or vision.int("vt_hidden_size", None) or vision.int("hidden_size")
    layers = vision.int("num_hidden_layers", None) or vision.int("vt_num_hidden_layers", None) or vision.int("depth")
    intermediate = (
        vision.int("intermediate_size", None)
        or vision.int("vt_intermediate_size", None)
        or h * vision.int("mlp_ratio", 4)
    )
    patch = vision.int("patch_size")
    channels = vision.int("num_channels", None) or vision.int("in_channels", 3)
    temporal = vision.int("temporal_patch_size", 1)
    gated = tower.gated_mlp or vision.raw("model_type") in _GATED_ENCODERS
    attention = 4 * h * h + 4 * h
    mlp = (3 if gated else 2) * h * intermediate + intermediate + h
    per_layer = attention + mlp + 4 * h
    patch_embedding = channels * temporal * patch * patch * h
    # a learned position per patch of the largest image, or (Qwen3-VL; Kimi-K2.5 as a height x
    # width grid; Gemma-4 one table for x, one for y) a table to interpolate
    grid = vision.int("init_pos_emb_height", 0, minimum=0) * vision.int("init_pos_emb_width", 0, minimum=0)
    xy_tables = 2 * vision.int("position_embedding_size", 0, minimum=0)
    table = vision.int("num_position_embeddings", 0, minimum=0) + grid + xy_tables
    positions = ((vision.int("image_size", 0, minimum=0) // patch) ** 2 + table) * h
    merge = _merged_patches(vision)
    return layers * per_layer + patch_embedding + positions + PROJECTORS[tower.projector](h, merge, text_hidden, vision)


def _qwen_merger(h: int, merge: int, text_hidden: int, vision: ConfigView) -> int:
    out = vision.int("out_hidden_size", text_hidden)
    return (h * merge) ** 2 + h * merge * out


def _qwen3_merger(h: int, merge: int, text_hidden: int, vision: ConfigView) -> int:
    """Qwen3-VL, Qwen3.5: a norm, then two biased linears over merged patches; Qwen3-VL adds one
    such merger (its norm after merging) per `deepstack_visual_indexes` entry."""
    merged, out = h * merge, vision.int("out_hidden_size", text_hidden)
    linears = merged * merged + merged + merged * out + out
    deepstack = len(vision.int_list("deepstack_visual_indexes") or [])
    return linears + 2 * h + deepstack * (linears + 2 * merged)


def _mlp_projector(h: int, merge: int, text_hidden: int, vision: ConfigView) -> int:
    """LLaVA, Mistral-3, Llama-4: a two-layer MLP after merging patches."""
    return h * merge * h * (merge > 1) + h * text_hidden + text_hidden * text_hidden


# A row's `projector` -> its parameters (encoder width, merged patches, LM width, vision_config).
PROJECTORS: dict[Projector, Callable[[int, int, int, ConfigView], int]] = {
    "qwen_merger": _qwen_merger,
    "qwen3_merger": _qwen3_merger,
    "linear": lambda h, merge, text_hidden, vision: h * text_hidden,  # Gemma-3
    "mlp": _mlp_projector,
}
