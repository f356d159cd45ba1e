"""The model kinds: one row each (vLLM's model registry and SkyPilot's clouds are the pattern).

A kind says what a model is (fleet.yaml's `kind`), which file of a checkpoint holds its facts,
what serves it in the container and which of the fleet's features apply to it. Code asks the row
(`KINDS[plan.kind]`) instead of comparing kind names; adding a kind is a row here, its planner
(planning/kinds.py) and its server (containers/), and tests/unit/test_tables.py lists where
else a kind may be named.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class ModelKind:
    name: str  # as fleet.yaml's `kind` and the plan's `kind` spell it
    facts_file: str  # the file of a checkpoint (and of its copy in the store) its facts are read from
    served_by_vllm: bool  # False: the container's image server (diffusers) serves it
    makes_tokens: bool  # it generates tokens: TTFT objectives, load sizing, vLLM's token, KV-cache and queue figures


TEXT = ModelKind("text", "config.json", served_by_vllm=True, makes_tokens=True)
IMAGE = ModelKind("image", "model_index.json", served_by_vllm=False, makes_tokens=False)

KINDS = {row.name: row for row in (TEXT, IMAGE)}
KindName = Literal["text", "image"]  # the manifest's and the plan's type; a test holds it to KINDS


def kind(name: str) -> ModelKind:
    """The row of `name`; ValueError naming the kinds there are."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"model kind {name!r}: allowed {list(KINDS)}") from None
