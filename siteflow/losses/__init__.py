"""Losses. Importing this package registers them in :data:`siteflow.core.registry.LOSSES`.

Registered names: ``"dice"``, ``"ce"``, ``"explog"``, ``"dice_ce"`` (segmentation; ``"ce"``
and ``"focal"`` also score one class per image, with class weights that may come from the
training counts), ``"bce"`` (multi-label classification with unknown labels masked),
``"masked_mse"`` (masked image modelling: the masked patches only).
"""

from siteflow.losses.bce import MaskedBCEWithLogitsLoss
from siteflow.losses.cross_entropy import CrossEntropyLoss
from siteflow.losses.dice import SoftDiceLoss
from siteflow.losses.dice_ce import DiceCELoss
from siteflow.losses.distillation import distillation_loss
from siteflow.losses.explog import ExpLogLoss
from siteflow.losses.focal import FocalLoss
from siteflow.losses.masked_mse import MaskedPatchMSELoss

__all__ = ["CrossEntropyLoss", "DiceCELoss", "ExpLogLoss", "FocalLoss", "MaskedBCEWithLogitsLoss", "MaskedPatchMSELoss", "SoftDiceLoss", "distillation_loss"]
