"""Compose a config.json's parts (attention, MLP, vision, weight format) into ArchitectureFacts."""

from __future__ import annotations

from typing import Any

from model_store.families.attention import kv_layers, layer_kinds, read_gqa
from model_store.families.config import ConfigError, ConfigView
from model_store.families.facts import ArchitectureFacts, KvLayers, MlaShape, ParameterCounts
from model_store.families.mla import read_mla
from model_store.families.mlp import read_mlp
from model_store.families.registry import MODEL_TYPES, NOT_SERVED, SUPPORTED_MODEL_TYPES, TEXT_MODEL_TYPES, ModelType
from model_store.families.vision import vision_parameters
from model_store.families.quantization import checkpoint_format


def _dtype(top: ConfigView, text: ConfigView) -> str:
    value = text.raw("torch_dtype") or text.raw("dtype") or top.raw("torch_dtype") or top.raw("dtype") or "bfloat16"
    return str(value).removeprefix("torch.")


def _model_types(top: ConfigView) -> tuple[str, ModelType, ConfigView, ConfigView | None]:
    """(text model type, the checkpoint's row, the LM's config level, vision_config)."""
    model_type = top.raw("model_type")
    if not isinstance(model_type, str):
        raise top.error("model_type", f"is missing or not a string ({model_type!r}); it names the architecture")
    if model_type in NOT_SERVED:
        raise top.error("model_type", f"{model_type!r} cannot be served: {NOT_SERVED[model_type]}")
    if model_type not in MODEL_TYPES:
        raise top.error("model_type", f"{model_type!r} is not modelled by the planner; modelled: {list(SUPPORTED_MODEL_TYPES)}")
    row = MODEL_TYPES[model_type]
    # A stray vision_config on a text model type is no tower vLLM loads.
    vision = top.child("vision_config") if row.vision else None
    text = top.child("text_config") or top
    if row.vision is not None and vision is None:
        raise top.error("vision_config", f"is missing for the multimodal model_type {model_type!r}")
    if text is top:
        return model_type, row, text, vision
    text_type = text.raw("model_type") or row.wrapped_text_type or model_type
    if text_type not in TEXT_MODEL_TYPES:
        raise text.error("model_type", f"{text_type!r} is not modelled; modelled: {list(TEXT_MODEL_TYPES)}")
    return text_type, row, text, vision


def _mtp_parameters(text: ConfigView, per_layer: int, hidden: int) -> int:
    """DeepSeek-V3's multi-token-prediction layers: in the checkpoint, not loaded to serve.
    Each is a decoder layer plus its own embedding and head copies, a 2h x h projection and norms."""
    layers = text.int("num_nextn_predict_layers", 0, minimum=0)
    own_embeddings = 2 * text.int("vocab_size") * hidden
    return layers * (per_layer + own_embeddings + 2 * hidden * hidden + 3 * hidden)


def facts_from_config(config: dict[str, Any], *, total_size: int | None = None, source: str = "") -> ArchitectureFacts:
    """Read ArchitectureFacts from a Hugging Face config.json dict.

    Raises ConfigError naming the key for anything missing, inconsistent or not modelled.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"{source or 'config.json'}: must be a JSON object, got {type(config).__name__}")
    try:
        return _compose(ConfigView(config, source or "config.json"), total_size, source)
    except ConfigError:
        raise
    except (TypeError, ValueError, AttributeError, IndexError, KeyError, ZeroDivisionError) as exc:
        # A value of a shape no family reads (a list where a number belongs, ...): still one line.
        raise ConfigError(f"{source or 'config.json'}: a value has an unexpected type or shape ({exc})") from None


def _compose(top: ConfigView, total_size: int | None, source: str) -> ArchitectureFacts:
    config = top.data
    model_type, row, text, vision = _model_types(top)
    parts = MODEL_TYPES[model_type].text
    hidden = text.int("hidden_size")
    num_layers = text.int("num_hidden_layers")
    vocab = text.int("vocab_size")
    mlp = read_mlp(text, parts, num_layers)
    if parts.attention == "mla":
        mla = read_mla(text)
        attention_params, norm_params = mla.parameters_per_layer(), mla.norm_parameters_per_layer()
        layers = (KvLayers("mla", num_layers, 1, mla.latent_size),)
        heads, kv_heads, head_dim = mla.heads, mla.heads, mla.qk_nope_head_dim + mla.qk_rope_head_dim
        attention_lora = mla.lora_shapes()
        mla_shape = MlaShape(head_dim, mla.qk_nope_head_dim, mla.v_head_dim)
    else:
        gqa = read_gqa(text, parts)
        attention_params, norm_params = gqa.parameters_per_layer(), gqa.norm_parameters_per_layer()
        if parts.attention_sinks:
            attention_params += gqa.heads  # one learned logit per head
        layers = kv_layers(layer_kinds(text, model_type, parts.layout, num_layers), gqa.kv_heads, gqa.head_dim)
        heads, kv_heads, head_dim = gqa.heads, gqa.kv_heads, gqa.head_dim
        attention_lora = gqa.lora_shapes()
        mla_shape = None
    tied = text.bool("tie_word_embeddings", top.bool("tie_word_embeddings", parts.tied_by_default))
    mlp_params = mlp.parameters(hidden)
    moe_layer_params = (mlp_params["experts"] + mlp_params["shared_experts"] + mlp_params["router"]) // max(
        1, mlp.moe.moe_layers if mlp.moe else 1
    )
    parameters = ParameterCounts(
        embeddings=vocab * hidden,
        lm_head=0 if tied else vocab * hidden,
        attention=num_layers * attention_params,
        norms=num_layers * norm_params + hidden,
        vision=vision_parameters(vision, hidden, row.vision) if vision else 0,
        not_loaded=_mtp_parameters(text, attention_params + moe_layer_params, hidden) if parts.mtp == "deepseek" else 0,
        **mlp_params,
    )
    family = ["MLA" if parts.attention == "mla" else "GQA", "MoE" if mlp.moe else "dense"]
    kinds = sorted({layer.kind for layer in layers} - {"full", "mla"})
    family += [f"{kind}-window hybrid" if len(layers) > 1 else f"{kind} window" for kind in kinds]
    family += ["vision"] if vision else []
    return ArchitectureFacts(
        model_type=model_type,
        family=" + ".join(family),
        hidden_size=hidden,
        intermediate_size=mlp.dense_intermediate if mlp.dense_layers else 0,
        num_layers=num_layers,
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=vocab,
        tie_word_embeddings=tied,
        max_position_embeddings=text.int("max_position_embeddings", 4096),
        checkpoint_dtype=_dtype(top, text),
        kv_layers=layers,
        parameters=parameters,
        lora_shapes=tuple(attention_lora + mlp.lora_shapes(hidden)),
        moe=mlp.moe,
        weight_format=checkpoint_format(config, top.where),
        checkpoint_bytes=total_size,
        mla_shape=mla_shape,
        source=source,
    )
