"""Name -> class registries for the pluggable parts of siteflow.

Each kind of component (dataset, model, loss, strategy) has one :class:`Registry`. A module
registers its classes with a decorator when it is imported; the config layer looks names up
and reports an unknown name together with the nearest registered one.

A registry imports its built-in package by name the first time it is asked for a name, so
that low layers (the config) look up classes defined in higher ones without importing them;
:func:`load_components` also imports the modules that installed packages declare in the
entry-point group ``siteflow.plugins`` (the config layer calls it before validating).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
from contextlib import contextmanager
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name that no class was registered under."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        nearest = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {nearest[0]!r}?" if nearest else ""
        self.message = f"unknown {kind} {name!r}{hint} (known: {', '.join(sorted(known))})"
        self.nearest = nearest[0] if nearest else None
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class Registry(Generic[T]):
    """A mapping from names to registered classes (or factories) of one kind."""

    def __init__(self, kind: str, builtin: str | None = None) -> None:
        self.kind = kind
        self.builtin = builtin
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers its target under ``name``."""

        def decorator(target: T) -> T:
            if name in self._entries and self._entries[name] is not target:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = target
            return target

        return decorator

    def unregister(self, name: str) -> None:
        """Remove the entry registered under ``name`` (a test's own class, when the test ends);
        nothing if there is none."""
        self._entries.pop(name, None)

    @contextmanager
    def registered(self, name: str, target: T) -> Iterator[T]:
        """Register ``target`` under ``name`` for the duration of a ``with`` block (a test's
        own class); yields ``target``."""
        self.register(name)(target)
        try:
            yield target
        finally:
            self.unregister(name)

    def get(self, name: str) -> T:
        """The entry registered under ``name``; raises :class:`UnknownNameError` otherwise."""
        self._load_builtin()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, list(self._entries)) from None

    def names(self) -> list[str]:
        self._load_builtin()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load_builtin()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def _load_builtin(self) -> None:
        if self.builtin is not None:
            importlib.import_module(self.builtin)  # registers on first import, cached after


DATASETS: Registry = Registry("dataset", "siteflow.datasets")
MODELS: Registry = Registry("model", "siteflow.models")
LOSSES: Registry = Registry("loss", "siteflow.losses")
STRATEGIES: Registry = Registry("strategy", "siteflow.strategies")
TASKS: Registry = Registry("task", "siteflow.tasks")
REGISTRIES = (DATASETS, MODELS, LOSSES, STRATEGIES, TASKS)

PLUGIN_GROUP = "siteflow.plugins"


def load_components() -> None:
    """Import every registry's built-in package and the modules of the entry-point group
    ``siteflow.plugins`` (installed since the last call too): their classes register
    themselves on import."""
    for registry in REGISTRIES:
        registry._load_builtin()
    for entry_point in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        entry_point.load()
