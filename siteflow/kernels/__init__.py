"""Dice kernels: the soft Dice loss and the per-class confusion counts.

The functions exported here are the implementations the rest of siteflow calls. For now they
are the pure-PyTorch references of :mod:`siteflow.kernels.reference`, which also define the
exact semantics any compiled implementation must reproduce.
"""

from siteflow.kernels.reference import confusion, dice_loss, predict_labels

__all__ = ["confusion", "dice_loss", "predict_labels"]
