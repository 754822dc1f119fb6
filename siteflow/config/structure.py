"""Checks of a loaded config's raw shape, before its keys are read.

YAML can describe values that no config needs and that hang or crash code that walks them:
nesting thousands of levels deep, aliases that repeat a value exponentially often (the
"billion laughs"), an alias to one of its own parents (a value that contains itself), NaN and
infinite numbers, integers beyond 64 bits (YAML's are unbounded; torch's, NumPy's and
Lightning's are not), and strings holding control characters (a NUL byte fits no file name).
:func:`check_structure` refuses all of these with the key path where they are, walking each
distinct value once: a value that aliases repeat is measured once and counted as often as it
appears.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

from siteflow.config.validation import ConfigError, join, short_repr

MAX_DEPTH = 32
"""Deepest nesting of mappings and lists in a config (its own keys use 6 levels)."""

MAX_VALUES = 100_000
"""Most values (mappings, lists and scalars, with the repeats of YAML aliases) in a config."""

MAX_INT = 2**63 - 1
"""The largest integer (in absolute value) in a config: torch and NumPy take 64-bit ones."""

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
"""Unicode's control characters (category Cc)."""


def check_structure(raw: Any) -> None:
    """Raise :class:`ConfigError` where ``raw`` (a loaded config) nests deeper than
    :data:`MAX_DEPTH`, holds more than :data:`MAX_VALUES` values, contains itself, or holds a
    number that is not finite, an integer beyond :data:`MAX_INT` or a string with a control
    character."""
    _Walk().measure(raw, "", 0)


def _items(value: Any, key_path: str) -> Iterator[tuple[str, Any]] | None:
    """(key path, item) of each item of a mapping (whose keys are checked as scalars) or a
    list; None for a scalar."""
    if isinstance(value, dict):
        return ((_checked_key(key_path, key), item) for key, item in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return ((join(key_path, index), item) for index, item in enumerate(value))
    return None


def _checked_key(key_path: str, key: Any) -> str:
    """The key path of a mapping's ``key``, which must be a valid scalar itself."""
    item_path = join(key_path, str(key))
    _check_scalar(key, item_path)
    return item_path


def _where(key_path: str) -> str:
    """The key path to report: the top level has none."""
    return key_path or "<top level>"


def _check_scalar(value: Any, key_path: str) -> None:
    """Raise :class:`ConfigError` for a number that is not finite, an integer beyond
    :data:`MAX_INT` or a string holding a control character (tab and newline included: no
    name, path or option needs one)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(key_path, f"is {value}: only finite numbers are allowed")
    if isinstance(value, int) and abs(value) > MAX_INT:
        raise ConfigError(key_path, f"is {short_repr(value)}: integers must fit in 64 bits")
    control = CONTROL.search(value) if isinstance(value, str) else None
    if control is not None:
        raise ConfigError(key_path, f"holds the control character {control.group()!r}: {short_repr(value)}")


class _Walk:
    """One walk over a config: the size and height of every container seen, by identity."""

    def __init__(self) -> None:
        self.measured: dict[int, tuple[int, int]] = {}  # id -> (values, levels below)
        self.open: set[int] = set()  # ids of the containers on the current path

    def measure(self, value: Any, key_path: str, depth: int) -> tuple[int, int]:
        """(number of values, levels of nesting) of ``value`` found at ``depth``."""
        items = _items(value, key_path)
        if items is None:
            _check_scalar(value, _where(key_path))
            return 1, 0
        identity = id(value)
        if identity in self.open:
            raise ConfigError(_where(key_path), "contains itself (a YAML alias to one of its own parents)")
        if identity not in self.measured:
            self.open.add(identity)
            self.measured[identity] = self._measure_items(items, key_path, depth)
            self.open.discard(identity)
        size, height = self.measured[identity]
        if depth + height > MAX_DEPTH:
            raise ConfigError(_where(key_path), f"is nested more than {MAX_DEPTH} levels deep")
        return size, height

    def _measure_items(self, items: Iterator[tuple[str, Any]], key_path: str, depth: int) -> tuple[int, int]:
        """(values, levels) of a container from its items; refuses one too deep or too large."""
        if depth >= MAX_DEPTH:
            raise ConfigError(_where(key_path), f"is nested more than {MAX_DEPTH} levels deep")
        size, height = 1, 1
        for item_path, item in items:
            item_size, item_height = self.measure(item, item_path, depth + 1)
            size += item_size
            height = max(height, item_height + 1)
            if size > MAX_VALUES:
                raise ConfigError(
                    _where(key_path), f"holds more than {MAX_VALUES} values (YAML aliases that repeat a value many times?)"
                )
        return size, height
