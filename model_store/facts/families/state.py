"""Recurrent-state layers: gated-delta-net linear attention (Qwen3-Next, Qwen3.5) and Mamba-2
(Nemotron-H, Granite-4.0-H, Falcon-H1).

Such a layer caches no keys or values: it keeps one state per sequence, a convolution window
and a recurrent matrix, whatever the context length, so it bounds how many sequences run at
once, not how many tokens. The shapes are vLLM's `MambaStateShapeCalculator`
(vllm/model_executor/layers/mamba/mamba_utils.py, read 2026-12 at 02d7108; see kv_cache.py
for what was read and what checks it), split over tensor-parallel ranks as vLLM splits them. The conv state is held in
the model's dtype (`mamba_cache_dtype` "auto"), the recurrent state too unless the model's
config hook says otherwise (Nemotron-H: `mamba_ssm_cache_dtype` from the config, float32 when
absent; vllm/model_executor/models/config.py NemotronHForCausalLMConfig).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llmfleet.model_store.facts.families.config import ConfigView

# ModelConfig.get_mamba_chunk_size: a config without a chunk size gets 2048 (vLLM source read 2026-12).
DEFAULT_CHUNK_SIZE = 2048
# Bytes of the recurrent-state dtypes a config may name.
SSM_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class Mamba2Keys:
    """Where a Mamba-2 row reads its fields (each family names them differently)."""

    heads: str
    head_dim: str
    state_size: str
    groups: str
    conv_kernel: str
    chunk_size: str
    inner: str | None = None  # the mixer's width, when not heads x head_dim
    expand: str | None = None  # ... or expand x hidden_size (Granite-4.0-H)
    ssm_dtype: str | None = None  # the config key naming the recurrent state's dtype ...
    ssm_dtype_default: str | None = None  # ... and vLLM's default when it is absent


@dataclass(frozen=True)
class StateShape:
    """What one state layer keeps per sequence, before the tensor-parallel split."""

    kind: Literal["gated_delta_net", "mamba2"]
    conv_channels: int  # channels the causal convolution sees
    conv_window: int  # conv kernel - 1 tokens of them
    heads: int  # value heads (gated delta net) or Mamba heads
    head_dim: int
    state_dim: int  # key head dim (gated delta net) or SSM state size
    groups: int = 0  # Mamba-2 B/C groups; replicated so that every rank holds whole groups
    chunk_size: int = DEFAULT_CHUNK_SIZE  # the kernel's chunk: prefix caching aligns blocks to it
    ssm_bytes: int | None = None  # the recurrent state's element size; None: the model dtype's

    @property
    def prefix_cache_mode(self) -> Literal["all", "align"]:
        """How vLLM 0.26 caches this state with prefix caching on (MambaModelConfig in
        vllm/model_executor/models/config.py): "all" for models that implement
        SupportsMambaPrefixCaching (the Mamba-2 ones: nemotron_h, granitemoehybrid, falcon_h1),
        a state per block of context in chunk-aligned blocks; "align" for the others (gated
        delta net), two states per sequence in the smallest block whose page holds one."""
        return "all" if self.kind == "mamba2" else "align"

    def bytes(self, tp: int, dtype_bytes: int) -> int:
        """Bytes of the conv and recurrent states of one sequence on one GPU."""
        conv = self.conv_channels
        if self.kind == "mamba2" and self.groups % tp:
            # extra_groups_for_head_shards: groups are replicated up to the TP size
            conv += 2 * (tp - self.groups) * self.state_dim
        recurrent = self.heads // tp * self.head_dim * self.state_dim
        return conv // tp * self.conv_window * dtype_bytes + recurrent * (self.ssm_bytes or dtype_bytes)


@dataclass(frozen=True)
class StateMixer:
    """A state layer's weights and its state shape."""

    parameters: int
    shape: StateShape
    lora: tuple[tuple[str, int, int], ...]


def read_gated_delta_net(text: ConfigView) -> StateMixer:
    """Qwen3-Next / Qwen3.5 `linear_attention` layers (vLLM qwen3_next.py Qwen3NextGatedDeltaNet):
    q/k/v/z and b/a projections, a causal conv over q, k and v, per-head A and dt bias, a gated
    RMSNorm over the value head, the output projection."""
    hidden = text.int("hidden_size")
    k_heads, v_heads = text.int("linear_num_key_heads"), text.int("linear_num_value_heads")
    k_dim, v_dim = text.int("linear_key_head_dim"), text.int("linear_value_head_dim")
    kernel = text.int("linear_conv_kernel_dim")
    key, value = k_heads * k_dim, v_heads * v_dim
    conv = 2 * key + value
    in_proj = hidden * (2 * key + 2 * value) + hidden * 2 * v_heads
    parameters = in_proj + conv * kernel + 2 * v_heads + v_dim + value * hidden
    shape = StateShape("gated_delta_net", conv, kernel - 1, v_heads, v_dim, k_dim)
    return StateMixer(parameters, shape, (("in_proj_qkvz", hidden, 2 * key + 2 * value), ("out_proj", value, hidden)))


def read_mamba2(text: ConfigView, keys: Mamba2Keys) -> StateMixer:
    """Mamba-2 mixers (vLLM mamba_mixer2.py MambaMixer2): in_proj to x, z, B, C and dt, a
    causal conv with bias over x, B and C, per-head A, D and dt bias, a gated RMSNorm, out_proj."""
    hidden = text.int("hidden_size")
    heads, head_dim = text.int(keys.heads), text.int(keys.head_dim)
    if keys.inner and text.has(keys.inner):
        inner = text.int(keys.inner)
    elif keys.expand and text.has(keys.expand):
        inner = text.int(keys.expand) * hidden
    else:
        inner = heads * head_dim
    state, groups, kernel = text.int(keys.state_size), text.int(keys.groups), text.int(keys.conv_kernel)
    conv = inner + 2 * groups * state
    in_proj = hidden * (inner + conv + heads)
    parameters = in_proj + conv * (kernel + 1) + 3 * heads + inner + inner * hidden
    chunk = text.int(keys.chunk_size, DEFAULT_CHUNK_SIZE)
    ssm_dtype = text.raw(keys.ssm_dtype, keys.ssm_dtype_default) if keys.ssm_dtype else None
    if ssm_dtype is not None and ssm_dtype not in SSM_DTYPE_BYTES:
        raise text.error(keys.ssm_dtype, f"{ssm_dtype!r} is not modelled ({', '.join(SSM_DTYPE_BYTES)} are)")
    ssm_bytes = SSM_DTYPE_BYTES[ssm_dtype] if ssm_dtype else None
    shape = StateShape("mamba2", conv, kernel - 1, heads, head_dim, state, groups, chunk, ssm_bytes)
    return StateMixer(parameters, shape, (("in_proj", hidden, inner + conv + heads), ("out_proj", inner, hidden)))
