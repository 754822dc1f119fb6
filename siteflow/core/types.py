"""Types shared by every layer."""

from __future__ import annotations

import torch

State = dict[str, torch.Tensor]
"""A network's weights (or other named tensors) by name, on the CPU, like a ``state_dict``."""
