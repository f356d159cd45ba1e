"""The container's boot decision: what it fetches, from where, into which path, from facts alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmfleet.model_store.store.boot import adapter_path, decide_boot, weights
from llmfleet.model_store.planning.fleet import load_and_plan
from llmfleet.model_store.contract.manifest import AdapterRef
from llmfleet.model_store.store.store import StoreLocation, StoreRefused

REPO = Path(__file__).resolve().parents[2]
STORE = StoreLocation("llmfleet-store", "fleet")


@pytest.fixture(scope="module")
def plans() -> dict:
    return {plan.model_name: plan for plan in load_and_plan(REPO / "fleet.yaml")[1]}


def test_streamed_weights_are_read_from_the_store_the_container_was_given(plans: dict):
    llama = plans["llama3-70b"]
    assert llama.streams_weights

    decided = weights(llama, STORE, model_root="/models", preloaded_copy="/opt/ml/model")

    assert (decided.how, decided.path) == ("stream", f"s3://llmfleet-store/fleet/models/llama3-70b/{llama.revision}")


def test_a_preloaded_copy_is_verified_in_place_else_the_revision_is_downloaded(plans: dict):
    small = plans["qwen3-small"]

    copy = weights(small, STORE, model_root="/models", preloaded_copy="/opt/ml/model")
    download = weights(small, STORE, model_root="/models", preloaded_copy=None)

    assert (copy.how, copy.path) == ("verify", "/opt/ml/model")
    assert (download.how, download.path) == ("download", f"/models/qwen3-small/{small.revision}")
    assert download.path == small.model_location("/models")  # what `plan --json` shows vLLM being given


def test_adapters_the_registry_promotes_each_get_a_path_in_the_cache_and_pins_win(plans: dict, tmp_path: Path):
    small = plans["qwen3-small"].model_copy(update={"adapters": [AdapterRef(name="medical", version="v1")]})

    boot = decide_boot(small, STORE, model_root=str(tmp_path), preloaded_copy=None, promoted={"medical": "v3", "legal": "v2"})

    assert [(a.name, a.version) for a in boot.adapters] == [("legal", "v2"), ("medical", "v1")]
    assert boot.adapters[1].path == (tmp_path / "_adapters" / "qwen3-small" / "medical" / "v1").resolve()
    assert boot.refused == {}


def test_names_that_cannot_be_a_path_are_refused_before_anything_is_written(plans: dict, tmp_path: Path):
    promoted = {"../../victim": "v1", "medical": "..", "legal": "v2"}

    boot = decide_boot(plans["qwen3-small"], STORE, model_root=str(tmp_path), preloaded_copy=None, promoted=promoted)

    assert [a.name for a in boot.adapters] == ["legal"]
    assert sorted(boot.refused) == ["../../victim", "medical"]
    assert "not a safe path segment" in boot.refused["medical"][1]
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(StoreRefused, match="refused"):
        adapter_path(str(tmp_path), "qwen3-small", "medical", "..")


def test_a_server_without_lora_fetches_no_adapter(plans: dict):
    plan = next(p for p in plans.values() if not p.vllm.enable_lora)

    boot = decide_boot(plan, STORE, model_root="/models", preloaded_copy=None, promoted={"medical": "v1"})

    assert boot.adapters == () and boot.refused == {}
