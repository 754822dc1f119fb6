"""Types shared by every layer."""

from __future__ import annotations

import torch

Weights = dict[str, torch.Tensor]
"""A network's weights by name, on the CPU, like a ``state_dict``."""

Tensors = dict[str, torch.Tensor]
"""Named tensors that are not a network's weights: a strategy's state (server buffers, control
variates, optimiser moments), saved and read back like weights."""
