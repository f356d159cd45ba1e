"""Which room of model_store/ may import which: each sub-package answers one question, and the
rules below keep a reader of one from having to read the others first.

    errors <- contract <- facts <- planning, store <- ops
                contract <- gateway <- planning (edge limits), ops

`contract/` (the manifest, the plan's types, the container's environment) is read by every
side and imports nothing but the error root; planning and the store never import each other;
the serving container never imports planning/ (it reads a plan, it never makes one). Imports
inside functions count too: a lazy import is still an import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

MODEL_STORE = "llmfleet.model_store"
# room -> the rooms it may import (besides itself)
MAY_IMPORT = {
    "errors": set(),
    "contract": {"errors"},
    "facts": {"errors", "contract"},
    "gateway": {"errors", "contract"},
    "planning": {"errors", "contract", "facts", "gateway"},
    "store": {"errors", "contract", "facts"},
    "ops": {"errors", "contract", "facts", "planning", "store", "gateway"},
}


def module_name(path: Path) -> str:
    return ".".join(("llmfleet", *path.relative_to(REPO).with_suffix("").parts)).removesuffix(".__init__")


def imports_of(path: Path) -> set[str]:
    """Every llmfleet module `path` imports, at any depth (`from a import b` counts a and a.b)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("llmfleet.")}


def room(module: str) -> str | None:
    """The room of a model_store module (`llmfleet.model_store.store.registry` -> store)."""
    parts = module.split(".")
    return parts[2] if parts[:2] == MODEL_STORE.split(".") and len(parts) > 2 else None


def files(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


def test_every_module_of_model_store_lives_in_a_room() -> None:
    top = sorted(p.name for p in (REPO / "model_store").glob("*.py"))
    assert top == ["__init__.py", "errors.py"]
    assert set(ROOMS) <= set(MAY_IMPORT) and {"contract", "facts", "planning", "store", "ops"} <= set(ROOMS)


ROOMS = sorted(p.name for p in (REPO / "model_store").iterdir() if (p / "__init__.py").is_file())


@pytest.mark.parametrize("name", ROOMS)
def test_a_room_imports_only_the_rooms_below_it(name: str) -> None:
    allowed = MAY_IMPORT[name] | {name}
    broken = {
        f"{module_name(path)} imports {imported}"
        for path in files(f"model_store/{name}")
        for imported in imports_of(path)
        if room(imported) is not None and room(imported) not in allowed
    }
    assert broken == set()


def test_the_serving_container_never_imports_planning() -> None:
    broken = {
        f"{module_name(path)} imports {imported}"
        for path in files("containers")
        for imported in imports_of(path)
        if room(imported) == "planning"
    }
    assert broken == set()


def test_a_lazy_import_is_seen_and_placed_in_its_room(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from llmfleet.model_store.planning.fit import PlanError\n")

    assert imports_of(module) == {"llmfleet.model_store.planning.fit", "llmfleet.model_store.planning.fit.PlanError"}
    assert room("llmfleet.model_store.planning.fit") == "planning" and room("llmfleet.stacks.fleet") is None
