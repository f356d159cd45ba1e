"""Where a model revision and an adapter version live: their keys in the store and their copies
on a server. The store's keys, the argv a plan shows and the container's boot decision
(`boot.py`) all take them from here, so the three cannot disagree."""

from __future__ import annotations

# The store's top folders, under its own prefix.
MODELS, ADAPTERS, REGISTRY, COMPILE_CACHE = "models", "adapters", "registry", "compile-cache"
ADAPTER_CACHE = "_adapters"  # under a server's model root; model names are DNS labels, never "_..."


def model_key(model: str, revision: str) -> str:
    """A model revision's key prefix under the store's own prefix."""
    return f"{MODELS}/{model}/{revision}"


def model_copy(model_root: str, model: str, revision: str) -> str:
    """Where a server keeps its verified copy of a model revision."""
    return f"{model_root}/{model}/{revision}"
