"""The fit search: each candidate instance and tensor-parallel size the catalog offers, the
cheapest that holds the load, and the planner's error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import Field

from llmfleet.model_store.contract.manifest import ModelSpec
from llmfleet.model_store.contract.plan import Frozen
from llmfleet.model_store.errors import EXIT_REFUSED, LlmfleetError
from llmfleet.model_store.facts.families import ArchitectureFacts
from llmfleet.model_store.facts.families.quantization import WeightFormat
from llmfleet.model_store.planning.catalog import GpuInstance, instance
from llmfleet.model_store.contract.targets import TARGETS


class PlanError(LlmfleetError):
    """A model the catalog cannot serve as asked; the message carries the numbers."""

    exit_code = EXIT_REFUSED


def _valid_tp_sizes(arch: ArchitectureFacts, gpus: int) -> list[int]:
    """vLLM needs attention heads divisible by TP, KV heads divisible by (or dividing) TP
    (MLA has no KV heads: its latent is whole on every rank) and state heads divisible by TP."""
    latent = arch.mla_shape is not None
    # State layers split their heads over ranks too (vLLM's divide() in MambaStateShapeCalculator).
    state_heads = [layer.state.heads for layer in arch.kv_layers if layer.state]
    return [
        tp
        for tp in range(1, gpus + 1)
        if arch.num_attention_heads % tp == 0
        and (latent or arch.num_kv_heads % tp == 0 or tp % arch.num_kv_heads == 0)
        and all(heads % tp == 0 for heads in state_heads)
    ]


class Candidate(Frozen):
    instance_type: str
    tp: int
    memory: Any = Field(description="The kind's memory plan (MemoryPlan for a text model); None when refused before sizing.")
    why_not: str | None
    headroom: int = Field(default=0, description="Bytes left for the kind's elastic use (KV cache, images in flight); ranks near misses.")


def hardware_refusal(spec: ModelSpec, dtype: str, fmt: WeightFormat | None, candidate: GpuInstance) -> str | None:
    gpu = candidate.gpu
    for name in spec.serving.targets:
        if TARGETS[name].instance_type(candidate) is None:
            return f"no {TARGETS[name].label} price in the catalog (not offered, or its price is not known)"
    if dtype == "bfloat16" and not gpu.bf16:
        return f"{gpu.name} (compute {gpu.compute_capability}) has no bfloat16"
    if fmt and gpu.compute_capability < fmt.min_capability:
        return (
            f"{fmt.method} ({fmt.scheme}) kernels need compute capability >= {fmt.min_capability}, "
            f"{gpu.name} has {gpu.compute_capability}"
        )
    return None


def hourly_price(candidate: GpuInstance, targets: Sequence[str]) -> float:
    """Hourly price of one server on each target; infinite where a target does not offer it."""
    prices = [TARGETS[name].price(candidate) for name in targets]
    return math.inf if None in prices else sum(prices)


class Choice(Frozen):
    """The cheapest fitting (instance, TP), and what the reasons say about the others."""

    instance: GpuInstance
    tp: int
    memory: Any = Field(description="The kind's memory plan at the chosen instance and TP.")
    fitting: int = Field(description="How many (instance, TP) choices fit.")
    cheaper_refused: list[Candidate] = Field(description="Cheaper choices that do not fit, cheapest first.")


def cheapest_fit(spec: ModelSpec, catalog: Sequence[GpuInstance], evaluate: Callable[[GpuInstance], list[Candidate]]) -> Choice:
    """The cheapest (instance, TP) that `evaluate` lets fit, among the pinned instance or the
    catalog; PlanError with the three nearest misses when none does. Every model kind uses it."""
    pool = [instance(spec.serving.instance_type)] if spec.serving.instance_type else list(catalog)
    evaluated = [c for candidate in pool for c in evaluate(candidate)]
    fitting = [c for c in evaluated if c.why_not is None]
    if not fitting:
        closest = sorted((c for c in evaluated if c.memory), key=lambda c: -c.headroom)[:3]
        shown = closest or evaluated[:3]
        details = "; ".join(f"{c.instance_type} {c.why_not}" for c in shown)
        raise PlanError(f"model {spec.name!r} fits no {'pinned ' if spec.serving.instance_type else ''}instance: {details}")
    by_name = {c.name: c for c in pool}
    price = lambda c: hourly_price(by_name[c.instance_type], spec.serving.targets)  # noqa: E731
    best = min(fitting, key=lambda c: (price(c), c.tp))
    if best.memory is None:  # fitting candidates always carry their memory plan
        raise PlanError(f"model {spec.name!r}: internal error, a fitting choice without a memory plan")
    cheaper_refused = sorted((c for c in evaluated if c.why_not and price(c) < price(best)), key=price)
    return Choice(instance=by_name[best.instance_type], tp=best.tp, memory=best.memory, fitting=len(fitting), cheaper_refused=cheaper_refused)
