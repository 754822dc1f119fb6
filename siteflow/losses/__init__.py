"""Losses. Importing this package registers them in :data:`siteflow.core.registry.LOSSES`.

Registered names: ``"dice"``, ``"ce"``, ``"explog"``, ``"dice_ce"`` (segmentation) and
``"bce"`` (multi-label classification with unknown labels masked).
"""

from siteflow.losses.bce import MaskedBCEWithLogitsLoss
from siteflow.losses.cross_entropy import CrossEntropyLoss
from siteflow.losses.dice import SoftDiceLoss
from siteflow.losses.dice_ce import DiceCELoss
from siteflow.losses.distillation import distillation_loss
from siteflow.losses.explog import ExpLogLoss

__all__ = ["CrossEntropyLoss", "DiceCELoss", "ExpLogLoss", "MaskedBCEWithLogitsLoss", "SoftDiceLoss", "distillation_loss"]
