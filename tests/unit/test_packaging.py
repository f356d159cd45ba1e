"""The wheel's package list (pyproject.toml) is every package folder under the four
top-level folders, each under the `llmfleet` namespace: a new sub-package that is not
listed would be left out of the wheel and fail only where it is installed."""

from __future__ import annotations

import tomllib

from tests.conftest import REPO

FOLDERS = ("containers", "model_store", "scripts", "stacks")


def test_every_package_folder_is_in_the_wheel_under_the_llmfleet_namespace() -> None:
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {
        ".".join(("llmfleet", *init.parent.relative_to(REPO).parts))
        for folder in FOLDERS
        for init in (REPO / folder).rglob("__init__.py")
    }
    assert setuptools["package-dir"] == {"llmfleet": "."}
    assert sorted(setuptools["packages"]) == sorted(folders)
