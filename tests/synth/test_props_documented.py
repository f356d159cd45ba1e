"""Every construct's props say what each field is and its default, as aws-cdk documents its
own props: a newcomer reads the class, not the constructor, to wire a construct."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil

import pytest

from llmfleet import stacks


def _props_classes() -> list[type]:
    found = []
    for module_info in pkgutil.iter_modules(stacks.__path__):
        module = importlib.import_module(f"stacks.{module_info.name}")
        found += [
            value
            for name, value in vars(module).items()
            if name.endswith("Props") and dataclasses.is_dataclass(value) and value.__module__ == module.__name__
        ]
    return found


PROPS = _props_classes()


def test_the_constructs_have_props() -> None:
    assert len(PROPS) >= 7, [p.__name__ for p in PROPS]


@pytest.mark.parametrize("props", PROPS, ids=lambda p: p.__name__)
def test_each_field_is_described_with_its_default(props: type) -> None:
    doc = props.__doc__ or ""
    # A dataclass without a docstring gets its signature as one, which names every field.
    assert not doc.startswith(f"{props.__name__}("), f"{props.__name__} has no docstring"
    for field in dataclasses.fields(props):
        assert field.name in doc, f"{props.__name__}.{field.name} is not described in the class docstring"
        if field.default is not dataclasses.MISSING:
            assert "default" in doc.split(field.name, 1)[1], f"{props.__name__}.{field.name}: the docstring does not state its default"
