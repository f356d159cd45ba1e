"""The extension tables: a serving target and a model kind are each one row in one module
(model_store/contract/targets.py, kinds.py); model types are one row each in
model_store/facts/families/registry.py. Elsewhere code asks the row: a target's name and a kind
comparison appear nowhere else, which the scan below holds."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import get_args

import pytest

from llmfleet.model_store.contract.container import TARGET_PORTS
from llmfleet.model_store.contract.kinds import IMAGE, KINDS, TEXT, KindName, kind
from llmfleet.model_store.contract.targets import ECS, SAGEMAKER, TARGETS, TargetName, target
from llmfleet.model_store.planning.catalog import INSTANCES
from tests.conftest import REPO

TABLES = {REPO / "model_store/contract/targets.py", REPO / "model_store/contract/kinds.py"}
FOLDERS = ("model_store", "containers", "scripts", "stacks")
# Calls whose arguments are spelled like a target but name something else.
OTHER_MEANINGS = {
    "client",  # boto3.client("sagemaker"), session.client("ecs"): AWS service names
    "format_arn",  # stack.format_arn(service="sagemaker", ...): the same
    "require_extra",  # require_extra("sagemaker", ...): the package extra
}
# Names whose value is spelled like a target but is a tag of their own: (file, name).
OWN_TAGS = {
    ("model_store/contract/front_door.py", "SAGEMAKER"),  # Access.SAGEMAKER: who may call a path
    ("model_store/gateway/config.py", "kind"),  # SageMakerUpstream.kind: the gateway's upstream protocol
}


def test_the_pydantic_types_are_the_tables_rows() -> None:
    assert set(get_args(TargetName)) == set(TARGETS) and set(get_args(KindName)) == set(KINDS)


def test_each_target_has_its_own_port_and_reads_its_own_catalog_columns() -> None:
    assert TARGET_PORTS == {"ecs": 8000, "sagemaker": 8080}
    for instance in INSTANCES:
        assert ECS.instance_type(instance) == instance.name and ECS.price(instance) == instance.price_usd_hour
        assert (SAGEMAKER.instance_type(instance) is None) == (SAGEMAKER.price(instance) is None)
        assert all(isinstance(row.price_source(instance), str) for row in TARGETS.values())
    assert [row.name for row in TARGETS.values() if row.model_dir] == ["sagemaker"]
    assert [row.name for row in TARGETS.values() if row.warm_pool] == ["ecs"]


def test_a_kind_row_says_what_serves_it_and_where_its_facts_are() -> None:
    assert (TEXT.facts_file, IMAGE.facts_file) == ("config.json", "model_index.json")
    assert [k.name for k in KINDS.values() if k.served_by_vllm] == [k.name for k in KINDS.values() if k.makes_tokens] == ["text"]


@pytest.mark.parametrize(("lookup", "name"), [(target, "ec2"), (kind, "audio")])
def test_an_unknown_name_is_refused_with_the_rows_there_are(lookup, name: str) -> None:
    with pytest.raises(ValueError, match=f"{name!r}: allowed"):
        lookup(name)


def named_outside_the_tables(source: str, relpath: str) -> list[str]:
    """Target names as string constants and comparisons of a `.kind` with a model kind's name."""
    tree = ast.parse(source)
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if func in OTHER_MEANINGS:
                skip |= {id(arg) for arg in node.args} | {id(k.value) for k in node.keywords}
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and (relpath, t.id) in OWN_TAGS for t in targets):
            skip |= {id(n) for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and node.value in TARGETS and id(node) not in skip:
            found.append(f"{relpath}:{node.lineno}: {node.value!r}")
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Attribute) and node.left.attr == "kind":
            for right in node.comparators:
                if isinstance(right, ast.Constant) and right.value in KINDS:
                    found.append(f"{relpath}:{node.lineno}: .kind compared with {right.value!r}")
    return found


def test_targets_and_kinds_are_named_only_in_their_tables() -> None:
    found = []
    for folder in FOLDERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            if path not in TABLES:
                found += named_outside_the_tables(path.read_text(), str(path.relative_to(REPO)))
    found += named_outside_the_tables((REPO / "app.py").read_text(), "app.py")
    assert found == []


def test_the_scan_sees_a_literal_and_a_kind_branch() -> None:
    source = 'if plan.kind == "image":\n    x = "ecs"\nboto3.client("ecs")\narn = format_arn(service="sagemaker")\n'
    assert named_outside_the_tables(source, "m.py") == ["m.py:1: .kind compared with 'image'", "m.py:2: 'ecs'"]
