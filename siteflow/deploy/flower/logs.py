"""Logging of the Flower apps: siteflow's records to stderr and to a file in the run folder.

The ServerApp's stderr is streamed to ``flwr run --stream`` (and ``flwr log``); a ClientApp's
goes to its SuperNode's output. Flower's own records (rounds, replies) go to the file too.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def log_to(path: Path) -> None:
    """Send siteflow's records (INFO and above) to stderr and append them, with Flower's,
    to the file ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stderr, file = logging.StreamHandler(sys.stderr), logging.FileHandler(path)
    for handler in (stderr, file):
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.setLevel(logging.INFO)
    siteflow = logging.getLogger("siteflow")
    siteflow.handlers = [stderr, file]  # the apps' processes configure nothing else
    siteflow.setLevel(logging.INFO)
    flower = logging.getLogger("flwr")
    flower.handlers = [h for h in flower.handlers if not isinstance(h, logging.FileHandler)] + [file]
