"""JSON as a hand-over file holds it: strict parsing, normalising, and the canonical text.

The manifest is untrusted JSON, so it is parsed strictly (no repeated keys, no NaN or
Infinity); what a writer puts in it is normalised to what a reader will get back; and the
text that is stored and signed is canonical (sorted keys, no spaces).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["as_json", "canonical_json", "strict_json"]


def strict_json(text: str) -> Any:
    """``json.loads`` that refuses repeated keys and NaN/Infinity (raises ValueError)."""

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result = dict(pairs)
        if len(result) != len(pairs):
            raise ValueError(f"repeated key in {[name for name, _ in pairs]}")
        return result

    def no_constant(name: str) -> None:
        raise ValueError(f"{name} is not a number")

    return json.loads(text, object_pairs_hook=unique, parse_constant=no_constant)


def as_json(value: Mapping[str, Any]) -> dict[str, Any]:
    """``value`` as JSON reads it back (tuples become lists); refuses what JSON cannot hold."""
    return json.loads(json.dumps(value, allow_nan=False))


def canonical_json(value: Any) -> str:
    """The canonical JSON text of ``value``: sorted keys, no spaces, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
