"""Feed-forward layers: dense gated MLPs and mixtures of experts.

Which layers are MoE, how wide an expert is and what is shared follow each family's
config keys (DeepSeek: first_k_dense_replace, moe_layer_freq, n_shared_experts;
Qwen-MoE: decoder_sparse_step, mlp_only_layers, shared_expert_intermediate_size;
Llama-4: interleave_moe_layer_step, intermediate_size_mlp; gpt-oss: biased experts; Gemma-4:
experts beside the dense MLP of every layer when enable_moe_block).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from llmfleet.model_store.facts.families.attention import block_types
from llmfleet.model_store.facts.families.config import ConfigView
from llmfleet.model_store.facts.families.heterogeneous import read_blocks
from llmfleet.model_store.facts.families.facts import MoeFacts
from llmfleet.model_store.facts.families.registry import MoeLayers, TextParts

_EXPERT_KEYS = ("n_routed_experts", "num_local_experts", "num_experts")


@dataclass(frozen=True)
class MlpLayout:
    dense_layers: int
    dense_intermediate: int
    moe: MoeFacts | None
    expert_bias: bool = False  # gpt-oss: biases on expert and router projections
    shared_gate: bool = False  # Qwen2-MoE: a sigmoid gate on the shared expert
    gated: bool = True  # gate, up and down projections; else up and down
    dense_widths: tuple[int, ...] = ()  # per-layer widths, when layers differ (block_configs)
    linear_layers: int = 0  # MLPs replaced by one hidden x hidden linear (block_configs)
    router_extra: int = 0  # per MoE layer beside the router's projection (Gemma-4: scales, norms)

    def parameters(self, hidden: int) -> dict[str, int]:
        matrices = 3 if self.gated else 2
        widths = self.dense_widths or (self.dense_intermediate,) * self.dense_layers
        dense = sum(matrices * hidden * width for width in widths) + self.linear_layers * hidden * hidden
        if self.moe is None:
            return {"dense_mlp": dense, "experts": 0, "shared_experts": 0, "router": 0}
        m = self.moe
        per_expert = matrices * hidden * m.expert_intermediate_size
        if self.expert_bias:
            per_expert += 2 * m.expert_intermediate_size + hidden
        shared = matrices * hidden * m.shared_intermediate_size + (hidden if self.shared_gate else 0)
        router = hidden * m.num_experts + (m.num_experts if self.expert_bias else 0) + self.router_extra
        return {
            "dense_mlp": dense,
            "experts": m.moe_layers * m.num_experts * per_expert,
            "shared_experts": m.moe_layers * shared if m.shared_intermediate_size else 0,
            "router": m.moe_layers * router,
        }

    def lora_shapes(self, hidden: int) -> list[tuple[str, int, int]]:
        width = self.dense_intermediate or (self.moe.shared_intermediate_size if self.moe else 0)
        if not width:
            return []
        gate = [("gate_proj", hidden, width)] if self.gated else []
        return [*gate, ("up_proj", hidden, width), ("down_proj", width, hidden)]


def _deepseek_layers(text: ConfigView, num_layers: int) -> list[bool]:
    first_dense = text.int("first_k_dense_replace", 0, minimum=0)
    every = text.int("moe_layer_freq", 1)
    return [i >= first_dense and i % every == 0 for i in range(num_layers)]


def _qwen_layers(text: ConfigView, num_layers: int) -> list[bool]:
    step = text.int("decoder_sparse_step", 1)
    dense_only = set(text.int_list("mlp_only_layers") or [])
    return [i not in dense_only and (i + 1) % step == 0 for i in range(num_layers)]


def _llama4_layers(text: ConfigView, num_layers: int) -> list[bool]:
    explicit = text.int_list("moe_layers")
    if explicit is not None:
        return [i in set(explicit) for i in range(num_layers)]
    step = text.int("interleave_moe_layer_step", 1)
    return [(i + 1) % step == 0 for i in range(num_layers)]


def _block_pattern_layers(text: ConfigView, num_layers: int) -> list[bool | None]:
    """Nemotron-H: MoE blocks, dense MLP blocks, and Mamba or attention blocks without an MLP."""
    kinds = {"moe": True, "mlp": False}
    return [kinds.get(name) for name in block_types(text, num_layers)]


# A row's `moe_layers` -> which layers are MoE (True), dense (False) or have no MLP (None);
# Mixtral, gpt-oss: every one is MoE.
MOE_LAYOUTS: dict[MoeLayers, Callable[[ConfigView, int], list[bool | None]]] = {
    "every": lambda text, num_layers: [True] * num_layers,
    "deepseek": _deepseek_layers,
    "qwen": _qwen_layers,
    "llama4": _llama4_layers,
    "block_pattern": _block_pattern_layers,
}


def _widths(text: ConfigView, parts: TextParts, moe_layers: int, num_layers: int) -> tuple[int, int, int]:
    """(expert, dense MLP, shared expert) widths."""
    if parts.moe_layers == "llama4":
        expert_width = text.int("intermediate_size")
        # one shared expert as wide as a routed one
        return expert_width, text.int("intermediate_size_mlp", expert_width), expert_width
    expert_width = text.int("moe_intermediate_size", None) or text.int("intermediate_size")
    dense_width = text.int("intermediate_size") if moe_layers < num_layers else 0
    shared = (
        (text.int(parts.shared_mlp, 0, minimum=0) if parts.shared_mlp else 0)
        or text.int("shared_expert_intermediate_size", 0, minimum=0)
        or text.int("moe_shared_expert_intermediate_size", 0, minimum=0)  # Nemotron-3
        or text.int("n_shared_experts", 0, minimum=0) * expert_width
    )
    return expert_width, dense_width, shared


def _block_config_mlp(text: ConfigView, num_layers: int) -> MlpLayout:
    """Llama-Nemotron: each layer's MLP at its own width, one linear, or none."""
    blocks = read_blocks(text, num_layers)
    widths = tuple(block.mlp_width for block in blocks if block.mlp_width)
    return MlpLayout(
        dense_layers=len(widths),
        dense_intermediate=max(widths, default=0),
        moe=None,
        dense_widths=widths,
        linear_layers=sum(block.mlp_linear for block in blocks),
    )


def _beside_mlp(text: ConfigView, num_layers: int) -> MlpLayout:
    """Gemma-4: a dense GeLU-gated MLP on every layer and, with `enable_moe_block`, routed
    experts beside it on every layer, whose router scales its normed input per dimension and
    each expert's output, with three more norms a layer (vLLM gemma4.py Gemma4Router, Gemma4MoE)."""
    if text.bool("use_double_wide_mlp") and text.int("num_kv_shared_layers", 0, minimum=0):
        raise text.error("use_double_wide_mlp", "is true: the KV-shared layers' doubled MLP width is not modelled")
    width = text.int("intermediate_size")
    if not text.bool("enable_moe_block"):
        return MlpLayout(dense_layers=num_layers, dense_intermediate=width, moe=None)
    hidden, experts = text.int("hidden_size"), text.int("num_experts")
    moe = MoeFacts(
        num_experts=experts,
        experts_per_token=text.int("top_k_experts"),
        expert_intermediate_size=text.int("moe_intermediate_size", None) or text.int("expert_intermediate_size"),
        moe_layers=num_layers,
    )
    scales_and_norms = hidden + experts + 3 * hidden
    return MlpLayout(dense_layers=num_layers, dense_intermediate=width, moe=moe, router_extra=scales_and_norms)


def read_mlp(text: ConfigView, parts: TextParts, num_layers: int) -> MlpLayout:
    if parts.moe_layers == "block_configs":
        return _block_config_mlp(text, num_layers)
    if parts.moe_layers == "beside_mlp":
        return _beside_mlp(text, num_layers)
    experts_key = next((k for k in _EXPERT_KEYS if text.has(k)), None)
    experts = text.int(experts_key, 0, minimum=0) if experts_key else 0
    flags = MOE_LAYOUTS[parts.moe_layers](text, num_layers) if experts > 1 or parts.moe_layers == "block_pattern" else []
    with_mlp = num_layers - flags.count(None)
    if experts <= 1:
        width = text.int(parts.shared_mlp, 0, minimum=0) if parts.shared_mlp else text.int("intermediate_size")
        return MlpLayout(dense_layers=with_mlp if width else 0, dense_intermediate=width, moe=None, gated=parts.gated_mlp)
    moe_layers = flags.count(True)
    expert_width, dense_width, shared = _widths(text, parts, moe_layers, with_mlp)
    moe = MoeFacts(
        num_experts=experts,
        experts_per_token=text.int("num_experts_per_tok", None) or text.int("experts_per_token"),
        expert_intermediate_size=expert_width,
        moe_layers=moe_layers,
        shared_intermediate_size=shared,
    )
    return MlpLayout(
        dense_layers=with_mlp - moe_layers,
        dense_intermediate=dense_width,
        moe=moe,
        expert_bias=parts.expert_bias,
        shared_gate=parts.shared_expert_gate,
        gated=parts.gated_mlp,
    )
