"""Loading and planning a fleet file: the path the CLI, the CDK app and the local fleet share."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmfleet.model_store.planning.fleet import load_and_plan
from llmfleet.model_store.contract.manifest import ManifestError

REPO = Path(__file__).resolve().parents[2]


def test_stage_override_replaces_the_manifests_and_is_validated() -> None:
    fleet, plans = load_and_plan(REPO / "fleet.yaml", "staging")
    assert fleet.stage == "staging" and {p.stage for p in plans} == {"staging"}
    with pytest.raises(ManifestError, match=r"stage 'Bad Stage!' must match \^\[a-z\]"):
        load_and_plan(REPO / "fleet.yaml", "Bad Stage!")


def test_local_sources_resolve_relative_to_the_manifest(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text((REPO / "model_store/known_configs/Qwen__Qwen3-0.6B.json").read_text())
    (tmp_path / "fleet.yaml").write_text("name: f\nmodels:\n  - {name: m, source: m}\n")
    _, [plan] = load_and_plan(tmp_path / "fleet.yaml")
    assert plan.store_uri is None and plan.architecture == "local:m"
