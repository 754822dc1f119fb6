"""Finding names and label values of chest X-ray releases, and the policies that turn them
into targets and masks.

Releases spell the same finding differently ("Pleural Effusion" in CheXpert, "Effusion" in
ChestX-ray14, "Pleural effusion" in VinDr-CXR). siteflow names a finding by its canonical
form: lower case, words joined by "_" ("pleural_effusion"), so that the sites of one study
share names. Raw label values are 1 (positive), 0 (negative), -1 (uncertain) and NaN (a blank
cell: not mentioned).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Literal

import numpy as np

from siteflow.datasets.errors import DataError

UncertainPolicy = Literal["zeros", "ones", "ignore"]
BlankPolicy = Literal["zeros", "ignore"]

# Spellings whose plain canonical form differs from the name the other releases use.
ALIASES = {"effusion": "pleural_effusion", "other_disease": "other_diseases"}
BLANK = math.nan


def canonical_label(name: str) -> str:
    """The canonical name of a finding: ``"Pleural Effusion"``, ``"pleural effusion"`` and
    ChestX-ray14's ``"Effusion"`` are all ``"pleural_effusion"``; ``"Nodule/Mass"`` is
    ``"nodule_mass"``."""
    plain = re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")
    return ALIASES.get(plain, plain)


def resolve_labels(
    requested: Sequence[str] | None, available: Sequence[str], where: str
) -> tuple[str, ...]:
    """Canonical names of the ``requested`` findings in their given order (all ``available``
    ones when None). Raises ValueError naming ``where`` for an unknown or repeated finding."""
    if requested is None:
        return tuple(available)
    names = tuple(canonical_label(name) for name in requested)
    unknown = [raw for raw, name in zip(requested, names) if name not in available]
    if unknown:
        raise ValueError(f"{where} has no labels {unknown}; available: {list(available)}")
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"labels must name at least one finding, each once, not {list(requested)}")
    return names


def parse_label(cell: str, where: str) -> float:
    """The raw value of a label cell: 1.0, 0.0, -1.0, or NaN for an empty cell.

    Raises DataError naming ``where`` (file, row, column) for any other content.
    """
    text = cell.strip()
    if not text:
        return BLANK
    try:
        value = float(text)
    except ValueError:
        value = math.inf
    if value not in (1.0, 0.0, -1.0):
        raise DataError(f"{where}: label value {cell!r} is none of 1, 0, -1 or empty")
    return value


def encode_labels(
    values: np.ndarray, uncertain: UncertainPolicy, blank: BlankPolicy
) -> tuple[np.ndarray, np.ndarray]:
    """Targets and mask, float32 (N, L) each, of raw values (N, L) in {1, 0, -1, NaN}.

    A positive is (1, known), a negative (0, known). An uncertain value (-1) becomes a
    negative ("zeros"), a positive ("ones"), or unknown ("ignore": target 0, mask 0). A blank
    becomes a negative ("zeros") or unknown ("ignore").
    """
    is_blank = np.isnan(values)
    is_uncertain = values == -1.0
    targets = (values == 1.0) | (is_uncertain & (uncertain == "ones"))
    unknown = (is_uncertain & (uncertain == "ignore")) | (is_blank & (blank == "ignore"))
    return targets.astype(np.float32), (~unknown).astype(np.float32)
