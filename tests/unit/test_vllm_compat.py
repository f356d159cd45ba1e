"""The manifest's allowed values against the installed vLLM's own registries.

A vLLM upgrade that renames a parser or drops a quantization method fails here, not at a
container's boot.
"""

from __future__ import annotations

import typing

import pytest

from llmfleet.model_store.contract.manifest import Quantization, REASONING_PARSERS, VLLM_LORA_RANKS
from llmfleet.model_store.planning.fit import PlanError
from llmfleet.model_store.planning.text import plan_model, UNSERVABLE_QUANTIZATION
from tests.unit.test_plan import _fleet
from llmfleet.model_store.facts.architectures import known_architecture


def test_every_reasoning_parser_is_registered_in_vllm() -> None:
    from vllm.reasoning import ReasoningParserManager

    registered = set(ReasoningParserManager.lazy_parsers) | set(ReasoningParserManager.reasoning_parsers)
    assert set(REASONING_PARSERS) <= registered, sorted(set(REASONING_PARSERS) - registered)


def test_every_servable_quantization_is_a_vllm_method() -> None:
    from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS

    servable = {q.value for q in Quantization} - {"none"} - set(UNSERVABLE_QUANTIZATION)
    assert servable <= set(QUANTIZATION_METHODS)
    assert not set(UNSERVABLE_QUANTIZATION) & set(QUANTIZATION_METHODS), "vLLM serves it again: allow it"


def test_lora_ranks_match_vllm() -> None:
    from vllm.config.lora import MaxLoRARanks

    assert tuple(typing.get_args(MaxLoRARanks)) == VLLM_LORA_RANKS


def test_unservable_quantization_is_refused_with_alternatives() -> None:
    fleet, spec = _fleet(quantization="bitsandbytes")
    with pytest.raises(PlanError, match="field 'quantization': 'bitsandbytes' is not among vLLM 0.32's"):
        plan_model(fleet, spec, known_architecture(spec.architecture))
