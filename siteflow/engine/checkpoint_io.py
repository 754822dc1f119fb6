"""Lightning checkpoint I/O that writes atomically and never unpickles code.

Lightning ``.ckpt`` files stay at the site that wrote them (for resuming that site's work);
still, they are read with ``torch.load(weights_only=True)``, which accepts only tensors and
plain containers, so a tampered file cannot run code.
"""

from __future__ import annotations

import io
from typing import Any, Callable, Optional

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning_fabric.utilities.types import _PATH

from siteflow.core.atomic import write_bytes


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` with fsync-and-rename saving and weights-only loading."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        write_bytes(path, buffer.getvalue())

    def load_checkpoint(
        self,
        path: _PATH,
        map_location: Optional[Callable] = lambda storage, loc: storage,
        weights_only: Optional[bool] = None,
    ) -> dict[str, Any]:
        if weights_only is False:
            raise ValueError("siteflow never unpickles checkpoints: weights_only=False is refused")
        return torch.load(path, map_location=map_location, weights_only=True)
