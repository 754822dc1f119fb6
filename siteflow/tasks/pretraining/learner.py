"""The masked-image-modelling learner: reconstruction loss on the masked patches, and pictures."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torchmetrics import MeanMetric

from siteflow.config import TrainConfig
from siteflow.losses.masked_mse import image_errors
from siteflow.tasks.base import Batch, ExtraLoss, Learner
from siteflow.tasks.pretraining.pictures import save_reconstructions

EVALUATION_SEED = 0
"""Seed of the masks of validation, testing and prediction: every evaluation of a model hides
the same patches, so that its reconstruction losses compare."""

PICTURE_IMAGES = 4
"""Validation images shown in the picture of a stage."""

PICTURE_FILE = "reconstructions.png"
"""The picture's name in the stage's log folder (``logs/<stage>/``)."""


class MaskedImageModellingLearner(Learner):
    """Masked autoencoder + masked-patch loss; the metric is the reconstruction loss (lower
    is better), per image averaged over the split.

    Batches: ``{"image": (N, C, *spatial) float, "id": list[str]}`` (labels unused).

    Args:
        model: a masked autoencoder (``mae_vit``): ``model(images, mask=None)`` ->
            :class:`~siteflow.models.mae.Reconstruction`, with ``random_mask`` and
            ``reconstructed``.
        loss: ``(pred, target, mask) -> scalar`` (``masked_mse``).
        train, test_site_names, extra_losses: as for :class:`~siteflow.tasks.base.Learner`.

    After every validation epoch the first validation images (original, masked,
    reconstructed) are drawn into ``logs/<stage>/reconstructions.png``.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        *,
        train: TrainConfig,
        test_site_names: Sequence[str] = (),
        extra_losses: Sequence[ExtraLoss] = (),
    ) -> None:
        super().__init__(model, loss, train=train, test_site_names=test_site_names, extra_losses=extra_losses)
        self.val_reconstruction = MeanMetric()
        self.test_reconstruction = nn.ModuleList(MeanMetric() for _ in self.test_site_names)
        self.shown: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def loss_of(self, outputs, batch: Batch) -> torch.Tensor:
        return self.loss(outputs.pred, outputs.target, outputs.mask)

    def evaluation_outputs(self, batch: Batch):
        """The reconstruction under masks drawn from :data:`EVALUATION_SEED` (the same for
        every evaluation of every model)."""
        images = batch["image"]
        generator = torch.Generator(device=images.device).manual_seed(EVALUATION_SEED)
        return self.model(images, mask=self.model.random_mask(len(images), images.device, generator))

    def on_validation_epoch_start(self) -> None:
        self.shown = None

    def update_validation(self, outputs, batch: Batch) -> None:
        errors = image_errors(outputs.pred, outputs.target, outputs.mask)
        self.val_reconstruction.update(errors)
        if self.shown is None:
            images = batch["image"][:PICTURE_IMAGES]
            shown = outputs.first(len(images))
            masked = self.model.unpatchify(self.model.patchify(images) * (1 - shown.mask.unsqueeze(-1)))
            self.shown = (images, masked, self.model.reconstructed(images, shown))

    def on_validation_epoch_end(self) -> None:
        self.log("val/reconstruction_loss", self.val_reconstruction.compute(), prog_bar=True)
        self.val_reconstruction.reset()
        if self.shown is not None and self.trainer.is_global_zero and self.loggers:
            save_reconstructions(Path(self.loggers[0].log_dir).parent / PICTURE_FILE, *self.shown)
        self.shown = None

    def update_test(self, site_index: int, outputs, batch: Batch) -> None:
        self.test_reconstruction[site_index].update(image_errors(outputs.pred, outputs.target, outputs.mask))

    def test_result(self, site_index: int) -> dict[str, float]:
        metric = self.test_reconstruction[site_index]
        result = {"reconstruction_loss": metric.compute().item()}
        metric.reset()
        return result

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> Batch:
        """Each image's reconstruction loss (N,) on the CPU, with the ids."""
        outputs = self.evaluation_outputs(batch)
        return {"loss": image_errors(outputs.pred, outputs.target, outputs.mask).cpu(), "id": batch["id"]}
