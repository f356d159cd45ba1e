"""Compose a config.json's parts (attention, MLP, vision, weight format) into ArchitectureFacts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from llmfleet.model_store.facts.families.attention import kv_layers, layer_kinds, read_gqa
from llmfleet.model_store.facts.families.config import ConfigError, ConfigView
from llmfleet.model_store.facts.families.facts import ArchitectureFacts, KvLayers, MlaShape, ParameterCounts
from llmfleet.model_store.facts.families.heterogeneous import read_blocks
from llmfleet.model_store.facts.families.mla import read_indexer, read_mla
from llmfleet.model_store.facts.families.mlp import read_mlp
from llmfleet.model_store.facts.families.per_kind import read_per_kind
from llmfleet.model_store.facts.families.registry import (
    INFERRED,
    MODEL_TYPES,
    ModelType,
    Mtp,
    NEUTRAL_KEYS,
    NOT_MODELLED,
    NOT_SERVED,
    STRUCTURAL_KEYS,
    STRUCTURAL_VALUES,
    SUPPORTED_MODEL_TYPES,
    TEXT_MODEL_TYPES,
    TextParts,
)
from llmfleet.model_store.facts.families.state import read_gated_delta_net, read_mamba2, StateMixer
from llmfleet.model_store.facts.families.vision import vision_parameters
from llmfleet.model_store.facts.families.quantization import checkpoint_format


def _dtype(top: ConfigView, text: ConfigView) -> str:
    value = text.raw("torch_dtype") or text.raw("dtype") or top.raw("torch_dtype") or top.raw("dtype") or "bfloat16"
    return str(value).removeprefix("torch.")


def _not_understood(top: ConfigView) -> str | None:
    """The first key of a config that the default parts neither read nor may ignore."""
    for key in sorted(top.data):
        if key in STRUCTURAL_VALUES:
            if top.data[key] not in STRUCTURAL_VALUES[key]:
                return f"{key} {top.data[key]!r}"
        elif key not in STRUCTURAL_KEYS and key not in NEUTRAL_KEYS:
            return key
    return None


def _model_types(top: ConfigView) -> tuple[str, ModelType, ConfigView, ConfigView | None]:
    """(text model type, the checkpoint's row, the LM's config level, vision_config)."""
    model_type = top.raw("model_type")
    if not isinstance(model_type, str):
        raise top.error("model_type", f"is missing or not a string ({model_type!r}); it names the architecture")
    if model_type in NOT_SERVED:
        raise top.error("model_type", f"{model_type!r} cannot be served: {NOT_SERVED[model_type]}")
    if model_type in NOT_MODELLED:
        raise top.error("model_type", f"{model_type!r} cannot be planned yet: {NOT_MODELLED[model_type]}")
    if model_type not in MODEL_TYPES:
        unknown = _not_understood(top)
        if unknown:
            raise top.error(
                "model_type",
                f"{model_type!r} is not modelled by the planner and its key {unknown} is not one the planner's parts "
                f"understand; modelled: {list(SUPPORTED_MODEL_TYPES)}",
            )
        return model_type, INFERRED, top, None
    row = MODEL_TYPES[model_type]
    if top.has("audio_config"):
        raise top.error("audio_config", f"is set: an audio tower (model_type {model_type!r}) is not modelled")
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


@dataclass(frozen=True)
class _Mixers:
    """Every layer's token mixer (attention, or a state layer): weights, caches, LoRA shapes."""

    parameters: int  # all layers' mixers
    attention_layer: int  # one attention layer's (an MTP layer repeats it)
    norms: int  # the layers' norms (the final norm apart)
    layers: tuple[KvLayers, ...]
    heads: int
    kv_heads: int
    head_dim: int
    lora: list[tuple[str, int, int]]
    family: list[str]
    mla_shape: MlaShape | None = None
    not_stored: int = 0  # held by vLLM, not in the checkpoint


# A row's `state` -> (family label, how its layers are read).
STATE_PARTS: dict[str, tuple[str, Callable[[ConfigView, TextParts], StateMixer]]] = {
    "gated_delta_net": ("gated-delta-net hybrid", lambda text, parts: read_gated_delta_net(text)),
    "mamba2": ("Mamba-2 hybrid", lambda text, parts: read_mamba2(text, parts.state_keys)),
}


def _mla_mixers(text: ConfigView, parts: TextParts, num_layers: int) -> _Mixers:
    mla = read_mla(text)
    indexer = read_indexer(text, mla) if parts.indexer else None
    per_layer = mla.parameters_per_layer() + (indexer.parameters if indexer else 0)
    head_dim = mla.qk_nope_head_dim + mla.qk_rope_head_dim
    return _Mixers(
        parameters=num_layers * per_layer,
        attention_layer=per_layer,
        norms=num_layers * mla.norm_parameters_per_layer(),
        layers=(KvLayers("mla", num_layers, 1, mla.latent_size, indexer_bytes=indexer.cache_bytes if indexer else 0),),
        heads=mla.heads,
        kv_heads=mla.heads,
        head_dim=head_dim,
        lora=mla.lora_shapes(),
        family=["MLA + sparse-attention indexer" if indexer else "MLA"],
        mla_shape=MlaShape(head_dim, mla.qk_nope_head_dim, mla.v_head_dim),
    )


def _gqa_mixers(text: ConfigView, model_type: str, parts: TextParts, num_layers: int) -> _Mixers:
    gqa = read_gqa(text, parts)
    per_layer = gqa.parameters_per_layer() + (gqa.heads if parts.attention_sinks else 0)  # sinks: a logit per head
    kinds = layer_kinds(text, model_type, parts, num_layers)
    state_layers = sum(kind == "state" for kind, _ in kinds)
    attention_layers = sum(kind not in (None, "state") for kind, _ in kinds)
    label, read_state = STATE_PARTS[parts.state] if state_layers else ("", None)
    state = read_state(text, parts) if read_state else None
    layers = kv_layers(kinds, gqa.kv_heads, gqa.head_dim, state.shape if state else None)
    windowed = sorted({layer.kind for layer in layers} - {"full", "mla", "state"})
    family = ["GQA"] + [f"{kind}-window hybrid" if len(layers) > 1 else f"{kind} window" for kind in windowed]
    return _Mixers(
        parameters=attention_layers * per_layer + (state_layers * state.parameters if state else 0),
        attention_layer=per_layer,
        norms=num_layers * gqa.norm_parameters_per_layer(),
        layers=layers,
        heads=gqa.heads,
        kv_heads=gqa.kv_heads,
        head_dim=gqa.head_dim,
        lora=gqa.lora_shapes(),
        family=family + ([label] if label else []),
    )


def _block_config_mixers(text: ConfigView, model_type: str, parts: TextParts, num_layers: int) -> _Mixers:
    """Llama-Nemotron: each layer's attention kept (with its own KV heads), linear or dropped."""
    gqa = read_gqa(text, parts)
    blocks = read_blocks(text, num_layers)
    counts = Counter(block.kv_heads for block in blocks if block.kv_heads)
    if not counts:
        raise text.error("block_configs", "has no attention layer")
    hidden = gqa.hidden_size
    attention = sum(replace(gqa, kv_heads=k).parameters_per_layer() * n for k, n in counts.items())
    linears = sum(block.attention_linear for block in blocks) + sum(block.mlp_linear for block in blocks)
    norms = sum(bool(block.kv_heads or block.attention_linear) + bool(block.mlp_width or block.mlp_linear) for block in blocks)
    widest = replace(gqa, kv_heads=max(counts))
    return _Mixers(
        parameters=attention + linears * hidden * hidden,
        attention_layer=widest.parameters_per_layer(),
        norms=norms * hidden,
        layers=tuple(KvLayers("full", counts[k], k, gqa.head_dim) for k in sorted(counts, reverse=True)),
        heads=gqa.heads,
        kv_heads=min(counts),  # tensor parallelism must split (or replicate) every layer's heads
        head_dim=gqa.head_dim,
        lora=widest.lora_shapes(),
        family=["GQA", "per-layer blocks"],
    )


def _per_kind_mixers(text: ConfigView, model_type: str, parts: TextParts, num_layers: int) -> _Mixers:
    """Gemma-4: each layer kind with its own KV heads and head size; KV-shared layers cache nothing."""
    gqa = read_gqa(text, parts)
    kinds = layer_kinds(text, model_type, parts, num_layers)
    groups = read_per_kind(text, gqa, kinds)
    for group in groups:
        if not group.cached:
            problem = f"leaves no {group.kind} layer whose cache the shared ones could read"
            raise text.error("num_kv_shared_layers", problem)
    widest = max((g.attention for g in groups), key=lambda a: a.head_dim * (a.heads + a.kv_heads))
    windowed = sorted({g.kind for g in groups} - {"full"})
    return _Mixers(
        parameters=sum(g.parameters() for g in groups),
        attention_layer=widest.parameters_per_layer(),
        norms=num_layers * gqa.norm_parameters_per_layer(),
        layers=tuple(
            KvLayers(g.kind, g.cached, g.attention.kv_heads, g.attention.head_dim, g.window)
            for g in sorted(groups, key=lambda g: (g.kind != "full", g.kind, g.window or 0))
        ),
        heads=gqa.heads,
        # tensor parallelism must split (or replicate) every kind's KV heads; activations take
        # the largest head
        kv_heads=min(g.attention.kv_heads for g in groups),
        head_dim=max(g.attention.head_dim for g in groups),
        lora=gqa.lora_shapes(),
        family=["GQA", "per-kind head sizes"] + [f"{kind}-window hybrid" for kind in windowed],
        not_stored=sum(g.not_stored() for g in groups),
    )


# A row's `attention` -> how its layers' token mixers are read.
MIXERS: dict[str, Callable[[ConfigView, str, TextParts, int], _Mixers]] = {
    "gqa": _gqa_mixers,
    "mla": lambda text, model_type, parts, num_layers: _mla_mixers(text, parts, num_layers),
    "block_configs": _block_config_mixers,
    "per_kind": _per_kind_mixers,
}


def _mtp_parameters(text: ConfigView, mtp: Mtp, per_layer: int, hidden: int) -> int:
    """Multi-token-prediction layers: each a decoder layer, a 2h x h projection and norms, plus
    (DeepSeek) its own embedding and head copies."""
    layers = text.int(mtp.layers_key, 0, minimum=0)
    own_embeddings = 2 * text.int("vocab_size") * hidden if mtp.own_embeddings else 0
    return layers * (per_layer + own_embeddings + 2 * hidden * hidden + 3 * hidden)


def _compose(top: ConfigView, total_size: int | None, source: str) -> ArchitectureFacts:
    config = top.data
    model_type, row, text, vision = _model_types(top)
    parts = MODEL_TYPES.get(model_type, row).text
    hidden = text.int("hidden_size")
    num_layers = text.int("num_hidden_layers")
    vocab = text.int("vocab_size")
    mlp = read_mlp(text, parts, num_layers)
    mixers = MIXERS[parts.attention](text, model_type, parts, num_layers)
    tied = text.bool("tie_word_embeddings", top.bool("tie_word_embeddings", parts.tied_by_default))
    mlp_params = mlp.parameters(hidden)
    if mlp.moe:
        mlp_layer = (mlp_params["experts"] + mlp_params["shared_experts"] + mlp_params["router"]) // max(1, mlp.moe.moe_layers)
    else:
        mlp_layer = mlp_params["dense_mlp"] // max(1, mlp.dense_layers)
    parameters = ParameterCounts(
        embeddings=vocab * hidden,
        lm_head=0 if tied else vocab * hidden,
        attention=mixers.parameters,
        norms=mixers.norms + hidden,
        vision=vision_parameters(vision, hidden, row.vision) if vision else 0,
        not_loaded=_mtp_parameters(text, parts.mtp, mixers.attention_layer + mlp_layer, hidden) if parts.mtp else 0,
        not_stored=mixers.not_stored,
        **mlp_params,
    )
    family = [mixers.family[0], "MoE" if mlp.moe else "dense", *mixers.family[1:]]
    family += ["vision"] if vision else []
    return ArchitectureFacts(
        model_type=model_type,
        family=" + ".join(family),
        hidden_size=hidden,
        intermediate_size=mlp.dense_intermediate if mlp.dense_layers else 0,
        num_layers=num_layers,
        num_attention_heads=mixers.heads,
        num_kv_heads=mixers.kv_heads,
        head_dim=mixers.head_dim,
        vocab_size=vocab,
        tie_word_embeddings=tied,
        max_position_embeddings=text.int("max_position_embeddings", 4096),
        checkpoint_dtype=_dtype(top, text),
        kv_layers=mixers.layers,
        parameters=parameters,
        lora_shapes=tuple(mixers.lora + mlp.lora_shapes(hidden)),
        moe=mlp.moe,
        # vLLM lifts a wrapper's text_config quantization_config (Kimi-K2.5) to the top
        weight_format=checkpoint_format(text.data if config.get("quantization_config") is None else config, top.where),
        checkpoint_bytes=total_size,
        mla_shape=mixers.mla_shape,
        inferred=row is INFERRED,
        source=source,
    )
