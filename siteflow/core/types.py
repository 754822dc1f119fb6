"""Types shared by every layer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import torch

Weights = dict[str, torch.Tensor]
"""A network's weights by name, on the CPU, like a ``state_dict``."""

Tensors = dict[str, torch.Tensor]
"""Named tensors that are not a network's weights: a strategy's state (server buffers, control
variates, optimiser moments), saved and read back like weights."""


@dataclass(frozen=True)
class SiteRecord:
    """One site of the chain: which site trained, on how many samples, finished when (UTC)."""

    task_id: int
    task_name: str
    num_samples: int
    finished_at: str

    @classmethod
    def finished_now(cls, task_id: int, task_name: str, num_samples: int) -> SiteRecord:
        """The record of a site that finishes now."""
        return cls(task_id, task_name, num_samples, datetime.now(timezone.utc).isoformat(timespec="seconds"))
