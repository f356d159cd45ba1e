"""The vision encoder of a multimodal checkpoint: its weights, which vLLM loads beside the LM.

Counted from `vision_config` as a ViT (patch embedding, position embeddings, `layers` x
(attention + MLP + 2 norms)) plus the projector into the LM's hidden size, per encoder type
(SigLIP/CLIP: fc1/fc2 MLP with biases; Pixtral, Qwen2.5-VL: gated MLP; Qwen merges 2x2
patches before projecting).
"""

from __future__ import annotations

from model_store.families.config import ConfigView

# Encoders with a gated (SwiGLU) MLP; Qwen2-VL's is a plain fc1/fc2 pair, Qwen2.5-VL's is gated.
_GATED = {"pixtral", "qwen2_5_vl"}


def vision_parameters(vision: ConfigView, text_hidden: int, model_type: str) -> int:
    # Qwen2-VL's vision_config has the encoder's width in `embed_dim` and the LM's in `hidden_size`.
    h = vision.int("embed_dim", None) or vision.int("hidden_size")
    layers = vision.int("num_hidden_layers", None) or vision.int("depth")
    intermediate = vision.int("intermediate_size", None) or h * vision.int("mlp_ratio", 4)
    patch = vision.int("patch_size")
    channels = vision.int("num_channels", None) or vision.int("in_channels", 3)
    temporal = vision.int("temporal_patch_size", 1)
    gated = vision.raw("model_type", model_type) in _GATED or model_type in _GATED
    attention = 4 * h * h + 4 * h
    mlp = (3 if gated else 2) * h * intermediate + intermediate + h
    per_layer = attention + mlp + 4 * h
    patch_embedding = channels * temporal * patch * patch * h
    positions = (vision.int("image_size", 0, minimum=0) // patch) ** 2 * h
    merge = vision.int("spatial_merge_size", 1) ** 2
    if model_type in ("qwen2_vl", "qwen2_5_vl"):
        out = vision.int("out_hidden_size", text_hidden)
        projector = (h * merge) ** 2 + h * merge * out
    elif model_type == "gemma3":
        projector = h * text_hidden
    else:  # llava, mistral3, llama4: a two-layer MLP after merging patches
        projector = h * merge * h * (merge > 1) + h * text_hidden + text_hidden * text_hidden
    return layers * per_layer + patch_embedding + positions + projector
