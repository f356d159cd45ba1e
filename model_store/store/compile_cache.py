"""Which compile cache a server may reuse: the key it is stored under. Pure.

vLLM compiles the model with torch.compile on every cold start (36 s of an 86 s Qwen3-8B
boot on an H200) and keeps the result under VLLM_CACHE_ROOT. The container publishes that
directory to the store after its first healthy start and later starts restore it first.

The key names everything that makes a cache useless to another server: vLLM's version,
the model revision and its path on disk (vLLM hashes the path into its own cache key: the
model root of ECS tasks and SageMaker's /opt/ml/model make two caches), the accelerator,
and every vLLM setting of the plan except those that only name or time the server or say
where media may come from. vLLM hashes its own configuration again inside the cache and
recompiles on a mismatch, so a key that is too coarse costs a download, never a wrong
answer; one that is too fine costs a compile.
"""

from __future__ import annotations

import hashlib
import json

from llmfleet.model_store.contract.plan import Frozen, ServingPlan

# Settings that do not change what vLLM compiles: names, the drain timeout, the output
# parser, how the weights are read, and which hosts media may be fetched from.
NOT_COMPILED = frozenset(
    {"served_model_name", "shutdown_timeout", "reasoning_parser", "load_format", "allowed_media_domains"}
)
KEY_LENGTH = 16  # hex digits: 64 bits, no collision among a model's few dozen configurations


class CompileCacheKey(Frozen):
    """The store key of a compile cache, and what it was made from (recorded in its manifest)."""

    key: str
    factors: dict[str, object]


def compile_cache_key(plan: ServingPlan, *, vllm_version: str, accelerator: str, model_path: str) -> CompileCacheKey:
    """The key for `plan` served by vLLM `vllm_version` on `accelerator` (e.g. "NVIDIA H200, 9.0")
    from the weights at `model_path` (what `--model` says)."""
    factors: dict[str, object] = {
        "vllm": vllm_version,
        "model": plan.model_name,
        "revision": plan.revision,
        "model_path": model_path,
        "accelerator": accelerator,
        "settings": plan.vllm.model_dump(mode="json", exclude=set(NOT_COMPILED)),
    }
    digest = hashlib.sha256(json.dumps(factors, sort_keys=True).encode()).hexdigest()
    return CompileCacheKey(key=digest[:KEY_LENGTH], factors=factors)
