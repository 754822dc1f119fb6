"""A site's own tensors between rounds, on that site's disk: the one store of site-local state.

What never leaves a site (FedBN's normalisation layers, FFL's head, SCAFFOLD's control
variate, a personal model) is kept here, per round, by the site itself: in a simulation one
folder per site inside the run, in a deployed federation on the hospital's own disk.
``<folder>/<name>/round<r>.safetensors`` holds what the site kept after round ``r``; a re-run
of round ``r`` (after a crash) reads what it kept before ``r``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from pytorch_lightning.utilities import rank_zero_only
from safetensors import safe_open

from siteflow.core.atomic import load_weights, save_weights
from siteflow.core.types import Tensors

LOCAL = "local"
"""The name of the weights a site keeps under its strategy's ``local_keys``."""


class SiteStore:
    """Named, per-round tensors of one site.

    Args:
        folder: the site's own folder.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def save(self, name: str, round_number: int, tensors: Tensors) -> None:
        """Keep ``tensors`` as ``name`` after round ``round_number`` (atomically), and drop
        what neither a re-run of this round nor the next round reads."""
        if rank_zero_only.rank != 0:  # the other processes of a DDP run hold the same tensors
            return
        save_weights(self._path(name, round_number), tensors)
        earlier = [r for r in self.rounds(name) if r < round_number]
        for old in earlier[:-1]:
            self._path(name, old).unlink(missing_ok=True)

    def load(self, name: str, *, before: int) -> Tensors | None:
        """What the site kept as ``name`` after its last round before round ``before``."""
        earlier = [r for r in self.rounds(name) if r < before]
        return load_weights(self._path(name, earlier[-1])) if earlier else None

    def stored(self, name: str, round_number: int) -> StoredWeights:
        """What was kept as ``name`` after round ``round_number``, each tensor read from disk
        when it is looked up (see :class:`StoredWeights`)."""
        return StoredWeights(self._path(name, round_number))

    def rounds(self, name: str) -> list[int]:
        """The rounds after which ``name`` was kept, in order."""
        files = (self.folder / name).glob("round*.safetensors")
        return sorted(int(path.stem[len("round"):]) for path in files)

    def _path(self, name: str, round_number: int) -> Path:
        return self.folder / name / f"round{round_number}.safetensors"


class StoredWeights(Mapping[str, torch.Tensor]):
    """The name-keyed tensors of a safetensors file of this run, each read from the file when
    it is looked up and not kept: a mapping of weights that holds none of them in memory (a
    simulated federation's updates wait for the average this way, so that its memory does not
    grow with its sites).

    Args:
        path: the file (written by :meth:`SiteStore.save`).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        with safe_open(str(self.path), framework="pt") as handle:
            self._names = list(handle.keys())

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._names:
            raise KeyError(name)
        with safe_open(str(self.path), framework="pt") as handle:
            return handle.get_tensor(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)
