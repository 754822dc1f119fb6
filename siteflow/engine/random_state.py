"""Random state saved in every checkpoint, so that a resumed site continues bit for bit.

A site resumed from its ``last.ckpt`` must end with the weights an uninterrupted run ends with.
Lightning restores the weights, optimizer, scheduler and loop counters; what it does not restore
is where the random streams stood: the training loader's shuffling generator (the next epoch's
order), torch's global generator (dropout, noise, relay's replays; CUDA's too), NumPy's and
Python's (augmentation libraries draw from those). :class:`RandomStateCheckpoint` stores all of
them with the checkpoint and puts them back when the checkpoint is loaded.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from pytorch_lightning.callbacks import Callback


class RandomStateCheckpoint(Callback):
    """Saves and restores the random streams of a site's training with its checkpoints.

    Args:
        shuffle: the training loader's generator (``DataLoader.generator``).
    """

    def __init__(self, shuffle: torch.Generator) -> None:
        self.shuffle = shuffle

    def state_dict(self) -> dict[str, Any]:
        numpy_kind, numpy_keys, numpy_position, numpy_has_gauss, numpy_gauss = np.random.get_state()
        state = {
            "shuffle": self.shuffle.get_state(),
            "torch": torch.get_rng_state(),
            "numpy_keys": torch.from_numpy(np.asarray(numpy_keys, dtype=np.int64)),
            "numpy_rest": [str(numpy_kind), int(numpy_position), int(numpy_has_gauss), float(numpy_gauss)],
            "python": random.getstate(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.shuffle.set_state(state["shuffle"])
        torch.set_rng_state(state["torch"])
        kind, position, has_gauss, gauss = state["numpy_rest"]
        np.random.set_state((kind, state["numpy_keys"].numpy().astype(np.uint32), position, has_gauss, gauss))
        random.setstate(_as_tuples(state["python"]))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value: Any) -> Any:
    """Python's random state with the tuples it needs (a checkpoint may hand back lists)."""
    return tuple(_as_tuples(item) for item in value) if isinstance(value, (list, tuple)) else value
