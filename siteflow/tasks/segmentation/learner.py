"""The segmentation learner: Dice on validation; pooled and per-sample Dice, IoU, sensitivity
and specificity per test site; all at the labels' native resolution."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from siteflow.config import TrainConfig
from siteflow.kernels import predict_labels
from siteflow.metrics import PooledDice, PooledOverlap, SampleDice
from siteflow.tasks.base import Batch, ExtraLoss, Learner
from siteflow.tasks.segmentation.inference import Inference, resize_spatial


class SegmentationLearner(Learner):
    """Segmentation model + loss + overlap metrics.

    Training batches: ``{"image": (N, C_in, *spatial) float, "label": (N, *spatial) int64,
    "id": list[str]}`` (patches or resized images). Validation, test and prediction batches may
    hold labels at each image's native size ``(N, *native)``, the images being at the model's
    input size: the model runs over the whole image as ``train.inference`` says (one pass, or
    sliding windows; see :class:`~siteflow.tasks.segmentation.inference.Inference`), its logits
    are resized to the labels' size (bilinearly) and the metrics are computed there.

    Args:
        model: images (N, C_in, *spatial) -> logits (N, C, *spatial).
        loss: (logits, labels) -> scalar.
        train, test_site_names, extra_losses: as for :class:`~siteflow.tasks.base.Learner`.
        class_names: one name per class, background first.
        ignore_index: label value that losses and metrics skip, if any.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        *,
        train: TrainConfig,
        class_names: Sequence[str],
        test_site_names: Sequence[str] = (),
        ignore_index: int | None = None,
        extra_losses: Sequence[ExtraLoss] = (),
    ) -> None:
        super().__init__(model, loss, train=train, test_site_names=test_site_names, extra_losses=extra_losses)
        self.class_names = tuple(class_names)
        self.ignore_index = ignore_index
        self.inference = Inference(train.inference)
        num_classes = len(class_names)
        self.val_dice = PooledDice(num_classes, ignore_index=ignore_index)
        self.test_pooled = nn.ModuleList(
            PooledOverlap(num_classes, ignore_index=ignore_index, average="none") for _ in self.test_site_names
        )
        self.test_sample = nn.ModuleList(
            SampleDice(num_classes, ignore_index=ignore_index, average="none") for _ in self.test_site_names
        )

    def loss_of(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.loss(outputs, batch["label"])

    def evaluation_outputs(self, batch: Batch) -> torch.Tensor:
        """Logits (N, C, *native) of ``batch["image"]`` (N, C_in, *spatial), run as
        ``train.inference`` says and resized to the size of ``batch["label"]`` (N, *native)."""
        logits = self.inference(self.model, batch["image"])
        return resize_spatial(logits, batch["label"].shape[1:])

    def update_validation(self, outputs: torch.Tensor, batch: Batch) -> None:
        self.val_dice.update(outputs, batch["label"])
        self.log("val/dice", self.val_dice, prog_bar=True, batch_size=len(outputs))

    def update_test(self, site_index: int, outputs: torch.Tensor, batch: Batch) -> None:
        self.test_pooled[site_index].update(outputs, batch["label"])
        self.test_sample[site_index].update(outputs, batch["label"])

    def test_result(self, site_index: int) -> dict[str, float]:
        """Over the site's test pixels pooled, the mean over foreground classes of Dice
        (``dice``), IoU, sensitivity and specificity, and the Dice of each foreground class
        (``dice_<class>``); the mean over images of their mean foreground Dice (``dice_sample``)."""
        pooled_metric, sample_metric = self.test_pooled[site_index], self.test_sample[site_index]
        pooled = {name: value.reshape(-1) for name, value in pooled_metric.compute().items()}  # one class: 0-d
        sample = sample_metric.compute().reshape(-1)
        pooled_metric.reset()
        sample_metric.reset()
        result = {"dice": pooled["dice"].mean().item(), "dice_sample": sample.mean().item()}
        result.update({f"dice_{name}": value.item() for name, value in zip(self.class_names[1:], pooled["dice"])})
        result.update({name: pooled[name].mean().item() for name in ("iou", "sensitivity", "specificity")})
        return result

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> Batch:
        """The batch with ``"pred"``: predicted class ids (N, *native) at the labels' size, and
        the images resized (bilinearly) to that size for pictures, all on the CPU; the voxel
        spacing (N, n_axes) of volumes passed on."""
        pred = predict_labels(self.evaluation_outputs(batch), len(self.class_names))
        image = resize_spatial(batch["image"].float(), batch["label"].shape[1:])
        spacing = {"spacing": batch["spacing"].cpu()} if "spacing" in batch else {}
        return {"image": image.cpu(), "label": batch["label"].cpu(), "pred": pred.cpu(), "id": batch["id"], **spacing}
