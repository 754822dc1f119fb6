"""Metrics and confidence intervals against hand computations and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from siteflow.metrics import (
    HD95,
    PooledDice,
    SampleDice,
    bootstrap_confidence_interval,
    dice_from_confusion,
    hd95,
    mean_confidence_interval,
)

# Two 1x4 "images" with 3 classes.
PRED = torch.tensor([[[0, 1, 1, 2]], [[0, 0, 2, 2]]])
TRUE = torch.tensor([[[0, 1, 2, 2]], [[0, 1, 1, 1]]])
# sample 0: class 1 TP 1 FP 1 FN 0; class 2 TP 1 FP 0 FN 1  -> Dice 2/3, 2/3
# sample 1: class 1 TP 0 FP 0 FN 3; class 2 TP 0 FP 2 FN 0  -> Dice 0, 0
# pooled:   class 1 TP 1 FP 1 FN 3; class 2 TP 1 FP 2 FN 1  -> Dice 2/6, 2/5
# class 0: sample 0 TP 1; sample 1 TP 1 FP 1 FN 0 -> Dice 1, 2/3; pooled TP 2 FP 1 -> 4/5


class TestDiceFromConfusion:
    def test_values(self):
        tp, fp, fn = torch.tensor([1, 0, 0, 3]), torch.tensor([1, 0, 2, 0]), torch.tensor([0, 0, 0, 1])
        torch.testing.assert_close(dice_from_confusion(tp, fp, fn), torch.tensor([2 / 3, 1.0, 0.0, 6 / 7]))


class TestPooledDice:
    def test_hand_example_in_two_batches(self):
        metric = PooledDice(3, average="none")
        metric.update(PRED[:1], TRUE[:1])
        metric.update(PRED[1:], TRUE[1:])
        torch.testing.assert_close(metric.compute(), torch.tensor([2 / 6, 2 / 5]))

    def test_macro_and_background(self):
        metric = PooledDice(3, include_background=True)
        metric.update(PRED, TRUE)
        assert metric.compute().item() == pytest.approx((4 / 5 + 2 / 6 + 2 / 5) / 3)

    def test_class_absent_everywhere_scores_one(self):
        metric = PooledDice(4, average="none")
        metric.update(PRED, TRUE)
        torch.testing.assert_close(metric.compute(), torch.tensor([2 / 6, 2 / 5, 1.0]))

    def test_ignore_index_and_logits(self):
        logits = torch.nn.functional.one_hot(PRED, 3).movedim(-1, 1).float()
        labels = TRUE.clone().to(torch.uint8)
        labels[1, 0, 1:] = 255  # only the first pixel of sample 1 is left
        metric = PooledDice(3, ignore_index=255, average="none")
        metric.update(logits, labels)
        # class 1: TP 1 FP 1 FN 0; class 2: TP 1 FP 0 FN 1
        torch.testing.assert_close(metric.compute(), torch.tensor([2 / 3, 2 / 3]))

    def test_reset(self):
        metric = PooledDice(3)
        metric.update(PRED, TRUE)
        metric.reset()
        metric.update(PRED[:1], TRUE[:1])
        assert metric.compute().item() == pytest.approx(2 / 3)

    def test_bad_average(self):
        with pytest.raises(ValueError, match="average"):
            PooledDice(3, average="micro")


class TestSampleDice:
    def test_hand_example(self):
        metric = SampleDice(3, average="none")
        metric.update(PRED, TRUE)
        torch.testing.assert_close(metric.per_sample(), torch.tensor([[2 / 3, 2 / 3], [0.0, 0.0]]))
        torch.testing.assert_close(metric.compute(), torch.tensor([1 / 3, 1 / 3]))

    def test_empty_and_one_empty(self):
        pred = torch.tensor([[[0, 0, 0]], [[0, 1, 0]], [[0, 0, 0]]])
        true = torch.tensor([[[0, 0, 0]], [[0, 0, 0]], [[1, 0, 0]]])
        metric = SampleDice(2)
        metric.update(pred, true)
        assert metric.per_sample().flatten().tolist() == [1.0, 0.0, 0.0]
        assert metric.compute().item() == pytest.approx(1 / 3)

    def test_macro_is_the_mean_of_per_sample_means(self):
        metric = SampleDice(3, include_background=True)
        metric.update(PRED, TRUE)
        assert metric.compute().item() == pytest.approx(((1 + 2 / 3 + 2 / 3) + (2 / 3 + 0 + 0)) / 6)

    def test_per_sample_accumulates_in_order(self):
        metric = SampleDice(3)
        metric.update(PRED[1:], TRUE[1:])
        metric.update(PRED[:1], TRUE[:1])
        assert metric.per_sample().shape == (2, 2)
        torch.testing.assert_close(metric.per_sample()[:, 0], torch.tensor([0.0, 2 / 3]))

    def test_per_sample_before_update_is_empty(self):
        assert SampleDice(4, include_background=True).per_sample().shape == (0, 4)


def square_masks(shape: tuple[int, ...], starts: list[tuple[int, ...]], size: int) -> torch.Tensor:
    """Labels ``(len(starts), *shape)`` with class 1 on a hypercube of side ``size`` at each start."""
    labels = torch.zeros(len(starts), *shape, dtype=torch.int64)
    for n, start in enumerate(starts):
        labels[(n, *(slice(s, s + size) for s in start))] = 1
    return labels


class TestHD95:
    @pytest.mark.parametrize("k", [1, 2, 3])
    def test_squares_offset_by_k(self, k):
        # The boundary of each square lies within k of the other's, and the row of one square's
        # boundary farthest from the other (a tenth of the boundary pixels) lies exactly k away.
        true = square_masks((32, 32), [(8, 8)], 10)
        pred = square_masks((32, 32), [(8 + k, 8)], 10)
        assert hd95(pred, true, 2).item() == pytest.approx(k)
        assert hd95(square_masks((32, 32), [(8, 8 + k)], 10), true, 2).item() == pytest.approx(k)

    def test_cubes_offset_by_k(self):
        true = square_masks((16, 16, 16), [(4, 4, 4)], 6)
        pred = square_masks((16, 16, 16), [(4, 4, 6)], 6)
        assert hd95(pred, true, 2).item() == pytest.approx(2.0)

    def test_spacing(self):
        true = square_masks((32, 32), [(8, 8), (8, 8)], 10)
        pred = square_masks((32, 32), [(11, 8), (11, 8)], 10)  # offset 3 along axis 0
        assert hd95(pred, true, 2, spacing=(2.0, 0.5)).flatten().tolist() == pytest.approx([6.0, 6.0])
        assert hd95(pred, true, 2, spacing=0.5).flatten().tolist() == pytest.approx([1.5, 1.5])
        per_sample = hd95(pred, true, 2, spacing=[[1.0, 1.0], [3.0, 1.0]])
        assert per_sample.flatten().tolist() == pytest.approx([3.0, 9.0])

    def test_empty_cases(self):
        true = square_masks((20, 30), [(5, 5), (0, 0), (0, 0)], 4)
        pred = square_masks((20, 30), [(0, 0), (5, 5), (0, 0)], 4)
        true[1:] = 0  # sample 1: truth empty; sample 2: both empty
        pred[0] = 0  # sample 0: prediction empty
        pred[2] = 0
        diagonal = math.hypot(19, 29)
        assert hd95(pred, true, 2).flatten().tolist() == pytest.approx([diagonal, diagonal, 0.0])
        spaced = hd95(pred, true, 2, spacing=(2.0, 0.5))
        assert spaced.flatten().tolist() == pytest.approx([math.hypot(38, 14.5)] * 2 + [0.0])

    def test_3d_diagonal(self):
        true = square_masks((5, 6, 7), [(1, 1, 1)], 2)
        pred = torch.zeros_like(true)
        assert hd95(pred, true, 2).item() == pytest.approx(math.sqrt(4**2 + 5**2 + 6**2))

    def test_classes_and_logits(self):
        true = square_masks((24, 24), [(4, 4)], 8)
        true[0, 16:20, 16:20] = 2
        pred = square_masks((24, 24), [(6, 4)], 8)
        pred[0, 16:20, 17:21] = 2
        logits = torch.nn.functional.one_hot(pred, 3).movedim(-1, 1).float()
        result = hd95(logits, true, 3)
        assert result.shape == (1, 2) and result.dtype == torch.float32
        assert result.flatten().tolist() == pytest.approx([2.0, 1.0])
        with_background = hd95(pred, true, 3, include_background=True)
        assert with_background.shape == (1, 3)
        torch.testing.assert_close(with_background[:, 1:], result)

    def test_metric(self):
        true = square_masks((32, 32), [(8, 8), (8, 8)], 10)
        pred = square_masks((32, 32), [(9, 8), (11, 8)], 10)
        metric = HD95(2)
        metric.update(pred[:1], true[:1])
        metric.update(pred[1:], true[1:], spacing=2.0)
        assert metric.per_sample().flatten().tolist() == pytest.approx([1.0, 6.0])
        assert metric.compute().item() == pytest.approx(3.5)
        assert not HD95.higher_is_better

    def test_bad_spacing(self):
        true = square_masks((8, 8), [(2, 2)], 3)
        with pytest.raises(ValueError, match="spacing"):
            hd95(true, true, 2, spacing=(1.0, 1.0, 1.0))
        with pytest.raises(ValueError, match="spacing"):
            hd95(true, true, 2, spacing=0.0)


class TestMeanConfidenceInterval:
    def test_hand_example(self):
        # mean 2, sample sd 1; with 2 degrees of freedom the t quantile has the closed form
        # (2p - 1) / sqrt(2 p (1 - p)): t_{0.975, 2} = 0.95 / sqrt(0.04875) = 4.3027
        mean, low, high = mean_confidence_interval([1.0, 2.0, 3.0])
        half_width = 0.95 / math.sqrt(2 * 0.975 * 0.025) / math.sqrt(3)
        assert (mean, low, high) == pytest.approx((2.0, 2.0 - half_width, 2.0 + half_width), abs=1e-12)

    def test_confidence_level_and_tensor_input(self):
        # t_{0.95, 3} = 2.3534 (tables); values 1, 2, 3, 6: mean 3, sd sqrt(14 / 3)
        mean, low, high = mean_confidence_interval(torch.tensor([1.0, 2.0, 3.0, 6.0]), confidence=0.9)
        half_width = 2.3534 * math.sqrt(14 / 3) / 2
        assert (mean, low, high) == pytest.approx((3.0, 3.0 - half_width, 3.0 + half_width), abs=1e-4)

    def test_single_value(self):
        mean, low, high = mean_confidence_interval([0.7])
        assert mean == 0.7 and math.isnan(low) and math.isnan(high)

    def test_errors(self):
        with pytest.raises(ValueError, match="empty"):
            mean_confidence_interval([])
        with pytest.raises(ValueError, match="confidence"):
            mean_confidence_interval([1.0, 2.0], confidence=1.0)


class TestBootstrap:
    def test_close_to_scipy_percentile_bootstrap(self):
        values = np.random.default_rng(1).normal(size=200)
        estimate, low, high = bootstrap_confidence_interval(np.mean, values)
        ref = stats.bootstrap((values,), np.mean, n_resamples=2000, method="percentile", rng=2).confidence_interval
        assert estimate == pytest.approx(values.mean())
        assert low == pytest.approx(ref.low, abs=0.03)
        assert high == pytest.approx(ref.high, abs=0.03)
        assert low < estimate < high

    def test_deterministic_for_a_seed(self):
        values = torch.arange(10.0) ** 2
        first = bootstrap_confidence_interval(np.mean, values, n_resamples=200, seed=3)
        assert bootstrap_confidence_interval(np.mean, values, n_resamples=200, seed=3) == first
        assert bootstrap_confidence_interval(np.mean, values, n_resamples=200, seed=4) != first

    def test_paired_arrays_and_nan_resamples(self):
        scores = np.array([0.1, 0.4, 0.35, 0.8])
        targets = np.array([0, 0, 1, 1])

        def separation(s: np.ndarray, t: np.ndarray) -> float:
            """Mean score of positives minus negatives; NaN for a resample holding one class."""
            if t.min() == t.max():
                return math.nan
            return s[t == 1].mean() - s[t == 0].mean()

        estimate, low, high = bootstrap_confidence_interval(separation, scores, targets, n_resamples=500)
        assert estimate == pytest.approx(0.325)
        assert math.isfinite(low) and math.isfinite(high) and low <= estimate <= high

    def test_all_resamples_nan(self):
        estimate, low, high = bootstrap_confidence_interval(lambda x: math.nan, [1.0, 2.0], n_resamples=10)
        assert math.isnan(estimate) and math.isnan(low) and math.isnan(high)

    def test_errors(self):
        with pytest.raises(ValueError, match="one length"):
            bootstrap_confidence_interval(np.mean, [1.0, 2.0], [1.0])
        with pytest.raises(ValueError, match="at least one array"):
            bootstrap_confidence_interval(np.mean)
