"""Kernels: the soft Dice loss, the per-class confusion counts and the weighted sum of
federated aggregation.

The functions exported here are the implementations the rest of siteflow calls: the compiled
``siteflow._C`` (C++ with OpenMP, CUDA in a CUDA build; sources in ``csrc/``) where it is built
and serves the inputs' device, else the pure-PyTorch references of
:mod:`siteflow.kernels.reference`, which define the exact semantics, with one warning per
process. :func:`backend` says which is in use; ``SITEFLOW_DISABLE_EXTENSION=1`` forces the
references.
"""

from siteflow.kernels.ops import backend, confusion, cuda_built, dice_loss, weighted_sum
from siteflow.kernels.reference import predict_labels

__all__ = ["backend", "confusion", "cuda_built", "dice_loss", "predict_labels", "weighted_sum"]
