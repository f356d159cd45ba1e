"""Model families: a Hugging Face `config.json` read into the shapes the planner needs.

`registry.py` holds one row per `model_type`: the parts its model is composed of and where
each reads its fields. A part has one home here:

- `attention.py`: grouped-query attention and its per-layer layout (full, sliding window,
  chunked local), the layers' KV cache specs;
- `mla.py`: multi-head latent attention (DeepSeek-V2/V3, Kimi-K2): one latent per token;
- `mlp.py`: dense and mixture-of-experts MLPs (shared experts, first-k dense layers,
  interleaved MoE layers);
- `vision.py`: the vision encoder of a multimodal checkpoint (`text_config` beside a
  `vision_config`);
- `quantization.py`: the weight format a checkpoint's `quantization_config` describes
  (compressed-tensors schemes, fp8, awq/gptq, mxfp4, modelopt), per parameter group.

`facts_from_config` composes them into one `ArchitectureFacts`. Whatever a config asks for
that no part models is refused with the key named: never planned as a dense model.
"""

from __future__ import annotations

from llmfleet.model_store.facts.families.config import ConfigError, ConfigView
from llmfleet.model_store.facts.families.facts import ArchitectureFacts, KvLayers, MoeFacts, ParameterCounts
from llmfleet.model_store.facts.families.compose import facts_from_config
from llmfleet.model_store.facts.families.registry import MODEL_TYPES, SUPPORTED_MODEL_TYPES

__all__ = [
    "ArchitectureFacts",
    "ConfigError",
    "ConfigView",
    "KvLayers",
    "MODEL_TYPES",
    "MoeFacts",
    "ParameterCounts",
    "SUPPORTED_MODEL_TYPES",
    "facts_from_config",
]
