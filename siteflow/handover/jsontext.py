"""JSON as a hand-over file holds it: strict parsing, normalising, and the canonical text.

The manifest is untrusted JSON, so it is parsed strictly: no repeated keys, no NaN or
Infinity (nor a number too large for a float, which would read as infinity), and no nesting
deeper than :data:`MAX_DEPTH` (32) arrays and objects, checked before the (recursive)
parser meets the text: siteflow's manifests nest about 4 deep, and deep nesting would
otherwise escape as a ``RecursionError`` here or in whatever walks the parsed value later. What a writer puts in
a manifest is normalised to what a reader will get back; and the text that is stored and
signed is canonical (sorted keys, no spaces).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["MAX_DEPTH", "as_json", "canonical_json", "strict_json"]

MAX_DEPTH = 32
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
"""A JSON string (skipped whole, so the brackets in it do not count) or a bracket."""


def strict_json(text: str) -> Any:
    """``json.loads`` that refuses repeated keys, NaN/Infinity, floats out of range, and
    nesting deeper than :data:`MAX_DEPTH` (raises ValueError)."""

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result = dict(pairs)
        if len(result) != len(pairs):
            raise ValueError(f"repeated key in {[name for name, _ in pairs]}")
        return result

    def no_constant(name: str) -> None:
        raise ValueError(f"{name} is not a number")

    def finite(number: str) -> float:
        value = float(number)
        if not math.isfinite(value):
            raise ValueError(f"{number} is out of the range of a float")
        return value

    _check_depth(text)
    return json.loads(text, object_pairs_hook=unique, parse_constant=no_constant, parse_float=finite)


def as_json(value: Mapping[str, Any]) -> dict[str, Any]:
    """``value`` as JSON reads it back (tuples become lists); refuses what JSON cannot hold."""
    return json.loads(json.dumps(value, allow_nan=False))


def canonical_json(value: Any) -> str:
    """The canonical JSON text of ``value``: sorted keys, no spaces, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _check_depth(text: str) -> None:
    """Refuse (ValueError) JSON ``text`` whose arrays and objects nest deeper than :data:`MAX_DEPTH`."""
    depth = 0
    for token in _TOKENS.finditer(text):
        bracket = token.group()
        if bracket in ("[", "{"):
            depth += 1
            if depth > MAX_DEPTH:
                raise ValueError(f"nested deeper than {MAX_DEPTH} levels of arrays and objects")
        elif bracket in ("]", "}"):
            depth -= 1
