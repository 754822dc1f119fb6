"""The registry: names to classes, an unknown name with its nearest, and a test's own entries removed."""

from __future__ import annotations

import pytest

from siteflow.core.registry import Registry, UnknownNameError


class First:
    pass


class Second:
    pass


def test_a_registered_name_gives_its_class_and_an_unknown_one_the_nearest():
    registry: Registry = Registry("widget")
    registry.register("first")(First)
    assert registry.get("first") is First and "first" in registry and registry.names() == ["first"]
    with pytest.raises(UnknownNameError, match=r"unknown widget 'frist'; did you mean 'first'\? \(known: first\)"):
        registry.get("frist")
    with pytest.raises(ValueError, match="widget 'first' is already registered"):
        registry.register("first")(Second)


def test_registered_holds_a_class_for_a_with_block_only_and_unregister_removes_one():
    registry: Registry = Registry("widget")
    registry.register("first")(First)
    with registry.registered("second", Second) as target:
        assert target is Second and registry.names() == ["first", "second"]
    assert registry.names() == ["first"]
    with pytest.raises(RuntimeError), registry.registered("second", Second):
        raise RuntimeError("the test failed")
    assert "second" not in registry  # removed when the block fails too
    registry.unregister("first")
    registry.unregister("never")  # nothing to remove: nothing happens
    assert registry.names() == []
