"""Weights on the wire: one ``ArrayRecord`` of numpy arrays keyed by state-dict name.

Flower serialises each array with ``numpy.save(allow_pickle=False)``: nothing is pickled.
"""

from __future__ import annotations

from typing import Mapping

import torch
from flwr.app import Array, ArrayRecord


def to_arrays(weights: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """Name-keyed tensors as an ``ArrayRecord`` of numpy arrays (copied to the CPU)."""
    return ArrayRecord({name: Array(tensor.detach().cpu().numpy()) for name, tensor in weights.items()})


def from_arrays(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """The name-keyed tensors of an ``ArrayRecord``."""
    return {name: torch.from_numpy(array.numpy()) for name, array in record.items()}
