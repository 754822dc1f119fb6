"""Multi-class scores against scikit-learn on the same predictions; the losses against hand
computations; class-balanced weights by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn import metrics as sk

from siteflow.losses import CrossEntropyLoss, FocalLoss
from siteflow.losses.class_balance import class_balanced_weights
from siteflow.metrics.multiclass import (
    MulticlassScores,
    bootstrap_scores,
    confusion_from_scores,
    confusion_matrix,
    multiclass_scores,
    quadratic_kappa,
)

NAMES = ("a", "b", "c", "d")


def predictions(seed: int, n: int = 200, k: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities (n, k) that lean towards the truth, and the true classes (n,)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), labels] += rng.uniform(0, 2.5, n)
    probabilities = torch.from_numpy(logits).softmax(1)
    return probabilities, torch.from_numpy(labels)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_match_scikit_learn(seed: int) -> None:
    probabilities, labels = predictions(seed)
    scores = multiclass_scores(probabilities, labels, NAMES)
    y, p, pred = labels.numpy(), probabilities.numpy(), probabilities.argmax(1).numpy()
    assert scores["accuracy"] == pytest.approx(sk.accuracy_score(y, pred), abs=1e-12)
    assert scores["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(y, pred), abs=1e-12)
    assert scores["macro_f1"] == pytest.approx(sk.f1_score(y, pred, average="macro"), abs=1e-12)
    assert scores["kappa"] == pytest.approx(sk.cohen_kappa_score(y, pred, weights="quadratic", labels=range(4)), abs=1e-12)
    assert scores["auroc"] == pytest.approx(sk.roc_auc_score(y, p, multi_class="ovr", average="macro"), abs=1e-12)
    for k, name in enumerate(NAMES):
        assert scores[f"auroc_{name}"] == pytest.approx(sk.roc_auc_score(y == k, p[:, k]), abs=1e-12)
        assert scores[f"recall_{name}"] == pytest.approx(sk.recall_score(y == k, pred == k), abs=1e-12)
    assert (confusion_from_scores(scores, 4).numpy() == sk.confusion_matrix(y, pred, labels=range(4))).all()


def test_absent_classes_follow_scikit_learn() -> None:
    """A class absent from the truth: balanced accuracy over the present ones, macro F1 over
    those in truth or prediction, its AUROC undefined (left out of the mean)."""
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    probabilities = torch.tensor([[.7, .1, .1, .1], [.2, .5, .2, .1], [.1, .8, .05, .05], [.1, .6, .2, .1], [.3, .3, .1, .3], [.1, .1, .2, .6]])
    # predicted 0, 1, 1, 1, 0 (tie at the first maximum), 3
    scores = multiclass_scores(probabilities, labels, NAMES)
    y, pred = labels.numpy(), probabilities.argmax(1).numpy()
    with pytest.warns(UserWarning, match="y_pred contains classes not in y_true"):
        assert scores["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(y, pred))
    assert scores["macro_f1"] == pytest.approx(sk.f1_score(y, pred, average="macro", zero_division=0))
    assert "auroc_d" not in scores and math.isfinite(scores["auroc"])
    assert scores["auroc"] == pytest.approx(np.mean([sk.roc_auc_score(y == k, probabilities[:, k]) for k in range(3)]))


def test_kappa_by_hand() -> None:
    """Two raters over three grades: observed [[2, 1, 0], [0, 1, 0], [0, 0, 1]], N = 5."""
    confusion = torch.tensor([[2, 1, 0], [0, 1, 0], [0, 0, 1]])
    rows, columns = np.array([3, 1, 1]), np.array([2, 2, 1])
    weights = (np.arange(3)[:, None] - np.arange(3)[None, :]) ** 2
    expected = np.outer(rows, columns) / 5
    by_hand = 1 - (weights * confusion.numpy()).sum() / (weights * expected).sum()  # 1 - 1 / (31 / 5)
    assert quadratic_kappa(confusion) == pytest.approx(by_hand) == pytest.approx(1 - 5 / 31)
    assert math.isnan(quadratic_kappa(torch.tensor([[4, 0], [0, 0]])))


def test_metric_accumulates_batches() -> None:
    probabilities, labels = predictions(3, n=90)
    metric = MulticlassScores(NAMES)
    for start in range(0, 90, 32):
        metric.update(probabilities[start : start + 32], labels[start : start + 32])
    assert metric.compute() == multiclass_scores(probabilities, labels, NAMES)
    assert confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]), 2).tolist() == [[1, 1], [0, 1]]


def test_bootstrap_interval_brackets_the_value() -> None:
    probabilities, labels = predictions(4, n=120)
    result = bootstrap_scores(probabilities, labels, NAMES, n_resamples=200)
    assert set(result) == {"accuracy", "balanced_accuracy", "macro_f1", "auroc", "kappa"}
    for value, low, high in result.values():
        assert low <= value <= high and high - low < 0.4
    assert bootstrap_scores(probabilities, labels, NAMES, n_resamples=200) == result


LOGITS = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [-1.0, 1.0, 3.0]], dtype=torch.float64)
LABELS = torch.tensor([0, 1, 1])


def log_softmax_by_hand(row: list[float]) -> list[float]:
    total = math.log(sum(math.exp(v) for v in row))
    return [v - total for v in row]


def test_cross_entropy_weights_and_smoothing_by_hand() -> None:
    log_p = [log_softmax_by_hand(row) for row in LOGITS.tolist()]
    nll = [-log_p[i][y] for i, y in enumerate(LABELS.tolist())]
    assert CrossEntropyLoss()(LOGITS, LABELS).item() == pytest.approx(sum(nll) / 3, abs=1e-12)
    w = [1.0, 3.0, 0.5]
    weighted = (w[0] * nll[0] + w[1] * nll[1] + w[1] * nll[2]) / (w[0] + 2 * w[1])
    assert CrossEntropyLoss(class_weights=w)(LOGITS, LABELS).item() == pytest.approx(weighted, abs=1e-12)
    eps = 0.2  # target: 1 - eps on the true class, eps / 3 on each class
    smoothed = [-(1 - eps) * log_p[i][y] - eps / 3 * sum(log_p[i]) for i, y in enumerate(LABELS.tolist())]
    assert CrossEntropyLoss(label_smoothing=eps)(LOGITS, LABELS).item() == pytest.approx(sum(smoothed) / 3, abs=1e-12)


def test_focal_loss_by_hand() -> None:
    log_p = [log_softmax_by_hand(row) for row in LOGITS.tolist()]
    terms = [-((1 - math.exp(log_p[i][y])) ** 2) * log_p[i][y] for i, y in enumerate(LABELS.tolist())]
    assert FocalLoss(gamma=2.0)(LOGITS, LABELS).item() == pytest.approx(sum(terms) / 3, abs=1e-12)
    w = [2.0, 1.0, 1.0]
    assert FocalLoss(gamma=2.0, class_weights=w)(LOGITS, LABELS).item() == pytest.approx((2 * terms[0] + terms[1] + terms[2]) / 4, abs=1e-12)
    assert FocalLoss(gamma=0.0)(LOGITS, LABELS).item() == pytest.approx(CrossEntropyLoss()(LOGITS, LABELS).item(), abs=1e-12)


def test_class_balanced_weights_by_hand() -> None:
    assert class_balanced_weights([60, 30, 10], "balanced") == pytest.approx([100 / 180, 100 / 90, 100 / 30])
    assert class_balanced_weights([5, 0, 5], "balanced") == pytest.approx([1.0, 0.0, 1.0])
    raw = [(1 - 0.9) / (1 - 0.9**n) for n in (10, 2)]
    assert class_balanced_weights([10, 2], "effective", beta=0.9) == pytest.approx([2 * r / sum(raw) for r in raw])
    loss = CrossEntropyLoss(class_weights="balanced")
    with pytest.raises(ValueError, match="needs the training class counts"):
        loss(LOGITS, LABELS)
    assert loss.weights_for([60, 30, 10]) == pytest.approx([100 / 180, 100 / 90, 100 / 30])
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        CrossEntropyLoss(label_smoothing=1.0)
