"""The pictures drawn beside the numbers (matplotlib, the ``report`` extra).

A run writes its numbers (CSV, JSON) in any install. Its pictures (the site matrix's heatmap,
overlays of predictions, relay's replays) need matplotlib, ``pip install 'siteflow[report]'``:
without it, a training or test run skips them and says once which extra draws them
(:func:`drawing`), while the HTML reports, which are pictures first, are refused with that
extra named (:func:`require_drawing`).

Example::

    if drawing():
        figure = new_figure(figsize=(4, 3), dpi=100)
        figure.subplots().plot([0, 1], [0, 1])
        save_png(figure, results / "curve.png")
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from siteflow.core.atomic import atomic_path
from siteflow.core.extras import optional_module, require

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["colors", "drawing", "new_figure", "patches", "require_drawing", "save_png"]

_log = logging.getLogger(__name__)
_FEATURE = "drawing pictures"
_skipped_said = False

colors = optional_module("matplotlib.colors", "report", _FEATURE)
"""``matplotlib.colors``, imported on first use."""
patches = optional_module("matplotlib.patches", "report", _FEATURE)
"""``matplotlib.patches``, imported on first use."""
_figure = optional_module("matplotlib.figure", "report", _FEATURE)


def drawing() -> bool:
    """Whether pictures can be drawn (matplotlib is installed). The first time they cannot,
    logs a warning that the run's pictures are skipped and which extra draws them."""
    global _skipped_said
    if importlib.util.find_spec("matplotlib") is not None:
        return True
    if not _skipped_said:
        _log.warning("pictures skipped (the numbers are written): matplotlib is not installed: pip install 'siteflow[report]'")
        _skipped_said = True
    return False


def require_drawing(feature: str) -> None:
    """Refuse ``feature`` (e.g. ``"siteflow-report"``) without matplotlib, with
    :class:`~siteflow.core.extras.MissingExtra` naming the ``report`` extra."""
    require("matplotlib", "report", feature)


def new_figure(**options: Any) -> Figure:
    """A matplotlib ``Figure(**options)``, drawn off screen (no display, no pyplot state)."""
    return _figure.Figure(**options)


def save_png(figure: Figure, path: Path) -> None:
    """Save ``figure`` as a PNG at ``path``, atomically."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
