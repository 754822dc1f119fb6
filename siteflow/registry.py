"""Name -> class registries for the pluggable parts of siteflow.

Each kind of component (dataset, model, loss, strategy) has one :class:`Registry`. A module
registers its classes with a decorator when it is imported; the config layer looks names up
and reports an unknown name together with the nearest registered one.
"""

from __future__ import annotations

import difflib
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

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers its target under ``name``."""

        def decorator(target: T) -> T:
            if name in self._entries and self._entries[name] is not target:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = target
            return target

        return decorator

    def get(self, name: str) -> T:
        """The entry registered under ``name``; raises :class:`UnknownNameError` otherwise."""
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, list(self._entries)) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


DATASETS: Registry = Registry("dataset")
MODELS: Registry = Registry("model")
LOSSES: Registry = Registry("loss")
STRATEGIES: Registry = Registry("strategy")
