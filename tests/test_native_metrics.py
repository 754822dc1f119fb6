"""Metrics at each image's native resolution: Dice, IoU, sensitivity and specificity from the
confusion counts, against hand computations and MONAI's reference metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from monai.metrics import DiceMetric, compute_confusion_matrix_metric, get_confusion_matrix
from torch import nn
from torch.utils.data import DataLoader

from siteflow.config import TrainConfig
from siteflow.losses import DiceCELoss
from siteflow.metrics import PooledOverlap, confusion_counts, overlap_scores
from siteflow.tasks import SegmentationLearner
from siteflow.tasks.segmentation.prediction import score_samples

IGNORE = 255


class FixedLogits(nn.Module):
    """A 'model' whose logits are given: (N, C_in, 4, 4) images -> ``logits`` (1, 2, 4, 4)
    repeated for each image; its one parameter scales them (1)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("logits", logits)
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.scale * self.logits.expand(len(images), -1, -1, -1)


def low_resolution_logits() -> torch.Tensor:
    """(1, 2, 4, 4) logits whose foreground wins at pixel (1, 1) only: foreground minus
    background is +1 there and -1 elsewhere.

    Resized bilinearly (align_corners=False) to 8 x 8, output pixel j of an axis reads source
    position j / 2 - 1/4, so the weight of source pixel 1 is 1/4, 3/4, 3/4, 1/4 at j = 1, 2, 3, 4
    (0 elsewhere), and the difference at (r, c) is -1 + 2 w(r) w(c): positive where both
    weights are 3/4 (2 * 9/16 > 1). The prediction at 8 x 8 is foreground at rows 2-3,
    columns 2-3: four pixels.
    """
    difference = -torch.ones(4, 4)
    difference[1, 1] = 1
    return torch.stack([torch.zeros(4, 4), difference])[None]


def native_label(ignore_corner: bool) -> torch.Tensor:
    """(1, 8, 8) truth: foreground at rows 3-4, columns 2-3; with ``ignore_corner``, pixel
    (2, 2) is not counted."""
    label = torch.zeros(1, 8, 8, dtype=torch.long)
    label[0, 3:5, 2:4] = 1
    if ignore_corner:
        label[0, 2, 2] = IGNORE
    return label


# Prediction rows 2-3 x columns 2-3 against truth rows 3-4 x columns 2-3, over 64 pixels:
# TP (3,2) (3,3); FP (2,2) (2,3); FN (4,2) (4,3); TN 58.
# With (2, 2) ignored: TP 2, FP 1, FN 2 and TN 58 over 63 counted pixels.
EXPECTED = {
    False: {"dice": 4 / 8, "iou": 2 / 6, "sensitivity": 2 / 4, "specificity": 58 / 60},
    True: {"dice": 4 / 7, "iou": 2 / 5, "sensitivity": 2 / 4, "specificity": 58 / 59},
}


def learner_for(model: nn.Module, ignore_index: int | None = None, sites: tuple[str, ...] = ("a",)) -> SegmentationLearner:
    return SegmentationLearner(
        model,
        DiceCELoss(ignore_index=ignore_index),
        train=TrainConfig(),
        class_names=("background", "vessel"),
        test_site_names=sites,
        ignore_index=ignore_index,
    )


@pytest.mark.parametrize("ignore_corner", [False, True])
@torch.no_grad()
def test_logits_at_4x4_are_scored_against_an_8x8_label_as_computed_by_hand(ignore_corner):
    learner = learner_for(FixedLogits(low_resolution_logits()), IGNORE if ignore_corner else None)
    batch = {"image": torch.zeros(1, 3, 4, 4), "label": native_label(ignore_corner), "id": ["x"]}
    outputs = learner.evaluation_outputs(batch)
    assert outputs.shape == (1, 2, 8, 8)
    expected_pred = torch.zeros(8, 8, dtype=torch.long)
    expected_pred[2:4, 2:4] = 1
    assert torch.equal(outputs.argmax(1)[0], expected_pred)
    learner.update_test(0, outputs, batch)
    result = learner.test_result(0)
    expected = EXPECTED[ignore_corner]
    for name, value in expected.items():
        assert result[name] == pytest.approx(value, abs=1e-6), name
    assert result["dice_sample"] == pytest.approx(expected["dice"], abs=1e-6)
    assert result["dice_vessel"] == pytest.approx(expected["dice"], abs=1e-6)


def test_the_prediction_is_returned_at_the_native_size_with_the_image_resized_for_pictures():
    learner = learner_for(FixedLogits(low_resolution_logits()))
    image = torch.arange(16.0).reshape(1, 1, 4, 4).expand(1, 3, 4, 4)
    out = learner.predict_step({"image": image, "label": native_label(False), "id": ["x"]}, 0)
    assert out["pred"].shape == (1, 8, 8) and out["pred"].sum() == 4
    torch.testing.assert_close(out["image"], F.interpolate(image, size=(8, 8), mode="bilinear", align_corners=False))


def test_predict_scores_each_sample_by_hand_with_hd95():
    pred = torch.zeros(1, 8, 8, dtype=torch.long)
    pred[0, 2:4, 2:4] = 1
    batches = [
        {"pred": pred, "label": native_label(False), "id": ["a"]},
        {"pred": pred[:, :6, :6].clone(), "label": native_label(True)[:, :6, :6].clone(), "id": ["b"]},  # another size
    ]
    ids, scores = score_samples(batches, ("background", "vessel"), IGNORE)
    assert ids == ["a", "b"]
    assert list(scores) == ["dice", "hd95", "asd", "iou", "sensitivity", "specificity"]
    # sample b (6 x 6, pixel (2, 2) ignored): TP 2, FP 1, FN 2, TN 36 - 1 - 5 = 30
    for name, value in EXPECTED[False].items():
        assert scores[name][0, 0] == pytest.approx(value), name
    assert scores["dice"][1, 0] == pytest.approx(4 / 7)
    assert scores["iou"][1, 0] == pytest.approx(2 / 5)
    assert scores["sensitivity"][1, 0] == pytest.approx(2 / 4)
    assert scores["specificity"][1, 0] == pytest.approx(30 / 31)
    assert scores["hd95"][0, 0] == pytest.approx(1.0)  # the masks are one row apart
    assert scores["hd95"].shape == (2, 1)


def one_hot(labels: torch.Tensor) -> torch.Tensor:
    """(N, H, W) ids in {0, 1, 2} -> (N, 3, H, W) float, as MONAI's metrics take them."""
    return F.one_hot(labels, 3).movedim(-1, 1).float()


def test_confusion_counts_match_monai_and_ignored_pixels_count_nowhere():
    generator = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 3, (4, 9, 11), generator=generator)
    label = torch.randint(0, 3, (4, 9, 11), generator=generator)
    counts = confusion_counts(pred, label, 3)
    reference = get_confusion_matrix(one_hot(pred), one_hot(label), include_background=True)  # (N, C, [tp, fp, tn, fn])
    for index, name in enumerate(("tp", "fp", "tn", "fn")):
        assert torch.equal(getattr(counts, name), reference[..., index].long()), name
    scores = overlap_scores(counts)
    for ours, theirs in (("sensitivity", "sensitivity"), ("specificity", "specificity"), ("iou", "threat score")):
        torch.testing.assert_close(scores[ours], compute_confusion_matrix_metric(theirs, reference).float(), msg=ours)
    dice = DiceMetric(include_background=True, reduction="none")(one_hot(pred), one_hot(label))
    torch.testing.assert_close(scores["dice"], dice.float())

    ignored = label.clone()
    ignored[:, :3] = IGNORE  # the first three rows count nowhere: the same as cutting them off
    counted = confusion_counts(pred, ignored, 3, ignore_index=IGNORE)
    cut = confusion_counts(pred[:, 3:].contiguous(), label[:, 3:].contiguous(), 3)
    for name in ("tp", "fp", "fn", "tn"):
        assert torch.equal(getattr(counted, name), getattr(cut, name)), name
        assert getattr(counted, name).dtype == torch.int64


def test_undefined_scores():
    empty = torch.zeros(1, 2, 2, dtype=torch.long)
    scores = overlap_scores(confusion_counts(empty, empty, 2))
    # foreground absent from prediction and truth: Dice and IoU 1, sensitivity undefined, specificity 1
    assert scores["dice"][0, 1] == 1 and scores["iou"][0, 1] == 1 and scores["specificity"][0, 1] == 1
    assert math.isnan(scores["sensitivity"][0, 1])
    # background everywhere: no negative pixel for class 0
    assert math.isnan(scores["specificity"][0, 0]) and scores["sensitivity"][0, 0] == 1


def test_pooled_overlap_sums_the_counts_of_its_batches():
    metric = PooledOverlap(2, ignore_index=IGNORE, average="none")
    pred = torch.zeros(1, 8, 8, dtype=torch.long)
    pred[0, 2:4, 2:4] = 1
    metric.update(pred, native_label(False))
    metric.update(pred, native_label(True))
    # TP 2 + 2, FP 2 + 1, FN 2 + 2, TN 58 + 58
    expected = {"dice": 8 / 15, "iou": 4 / 11, "sensitivity": 4 / 8, "specificity": 116 / 119}
    result = metric.compute()
    for name, value in expected.items():
        assert result[name].item() == pytest.approx(value), name


class Images(torch.utils.data.Dataset):
    """Two test items of different native sizes, their images at the model's 4 x 4."""

    def __init__(self) -> None:
        self.items = [
            {"image": torch.zeros(3, 4, 4), "label": native_label(False)[0], "id": "eight"},
            {"image": torch.zeros(3, 4, 4), "label": torch.zeros(12, 12, dtype=torch.long), "id": "twelve"},
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]


def test_lightning_tests_images_of_different_native_sizes_one_at_a_time(tmp_path):
    learner = learner_for(FixedLogits(low_resolution_logits()), sites=("a",))
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.test(learner, dataloaders=DataLoader(Images(), batch_size=1), verbose=False)
    result = learner.test_results["a"]
    # at 12 x 12, pixel j of an axis reads source position (j - 1) / 3: the weight of source pixel
    # 1 is 1/3, 2/3, 1, 2/3, 1/3 at j = 2 ... 6, and w(r) w(c) > 1/2 at (4, 4) and its four
    # neighbours: five foreground pixels, all false positives against an empty truth
    twelve = F.interpolate(low_resolution_logits(), size=(12, 12), mode="bilinear", align_corners=False)
    assert (twelve[0, 1] > twelve[0, 0]).nonzero().tolist() == [[3, 4], [4, 3], [4, 4], [4, 5], [5, 4]]
    # pooled: TP 2, FP 2 + 5, FN 2, TN 58 + 139
    assert result["dice"] == pytest.approx(4 / 13)
    assert result["iou"] == pytest.approx(2 / 11)
    assert result["sensitivity"] == pytest.approx(2 / 4)
    assert result["specificity"] == pytest.approx(197 / 204)
    # per sample: 4/8, and 0 for the twelve (foreground predicted, none in truth)
    assert result["dice_sample"] == pytest.approx((4 / 8 + 0) / 2)


def test_the_summary_of_a_score_has_a_t_and_a_bootstrap_interval():
    from siteflow.tasks.segmentation.task import summary_statistics

    assert summary_statistics(np.array([0.8, 0.8, 0.8])) == pytest.approx((0.8,) * 5)  # no spread: every bound is the mean
    mean, low, high, boot_low, boot_high = summary_statistics(np.array([0.0, 1.0]))
    # t: 0.5 -/+ t(0.975, 1) * 0.7071 / sqrt(2) = 0.5 -/+ 12.706 * 0.5; bootstrap of two values: means 0, 0.5 or 1
    assert (mean, boot_low, boot_high) == (0.5, 0.0, 1.0)
    assert (low, high) == pytest.approx((0.5 - 12.7062 * 0.5, 0.5 + 12.7062 * 0.5), abs=1e-3)


def test_the_summary_leaves_out_images_where_a_score_is_undefined():
    from siteflow.tasks.segmentation.task import summary_statistics

    # sensitivity is NaN for an image without the class: the summary is that of the others, not
    # a NaN mean beside a bootstrap interval of only the resamples that missed the NaN image
    with_undefined = summary_statistics(np.array([0.9, np.nan, 0.7, 0.8]))
    assert with_undefined == pytest.approx(summary_statistics(np.array([0.9, 0.7, 0.8])))
    assert with_undefined[0] == pytest.approx(0.8)
    assert all(math.isnan(value) for value in summary_statistics(np.array([np.nan, np.nan])))
