"""Multi-class classification metrics (one class per image), all from the predicted class
probabilities and the true classes of a test set: accuracy, balanced accuracy (FLamby's
Fed-ISIC2019 metric), macro F1, one-vs-rest AUROC per class and their mean, Cohen's kappa
with quadratic weights (ordinal grades), and the confusion matrix they derive from.

The definitions follow scikit-learn's (the tests check them against it on the same
predictions): balanced accuracy is the mean recall over the classes present in the truth;
macro F1 the mean F1 over the classes present in the truth or the predictions; quadratic
kappa weighs a disagreement between class ids ``i`` and ``j`` by ``(i - j)^2 / (K - 1)^2``
over the declared classes ``0 ... K-1``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import rankdata
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

SCORES = ("accuracy", "balanced_accuracy", "macro_f1", "auroc", "kappa")
"""The headline numbers of :func:`multiclass_scores`, the first the site matrix's."""


def confusion_matrix(predicted: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Counts int64 (K, K): row = true class, column = predicted class, of ``predicted`` and
    ``labels`` int (N,) in ``0 ... num_classes - 1``."""
    index = labels.long() * num_classes + predicted.long()
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def balanced_accuracy(confusion: Tensor) -> float:
    """Mean recall over the classes that occur in the truth (rows of ``confusion`` (K, K)
    with a count); NaN for an empty matrix."""
    support = confusion.sum(1).double()
    present = support > 0
    if not present.any():
        return math.nan
    return (confusion.diagonal().double()[present] / support[present]).mean().item()


def macro_f1(confusion: Tensor) -> float:
    """Mean F1 = 2 TP / (2 TP + FP + FN) over the classes that occur in the truth or the
    predictions of ``confusion`` (K, K); NaN for an empty matrix."""
    tp = confusion.diagonal().double()
    fp = confusion.sum(0).double() - tp
    fn = confusion.sum(1).double() - tp
    present = (tp + fp + fn) > 0
    if not present.any():
        return math.nan
    return (2 * tp[present] / (2 * tp[present] + fp[present] + fn[present])).mean().item()


def quadratic_kappa(confusion: Tensor) -> float:
    """Cohen's kappa of ``confusion`` (K, K) with weights ``(i - j)^2``: 1 - sum(w * observed)
    / sum(w * expected), expected = outer product of the marginals / N. NaN when the expected
    disagreement is 0 (one class in truth and prediction alike)."""
    observed = confusion.double()
    total = observed.sum()
    if total == 0:
        return math.nan
    classes = torch.arange(observed.shape[0], dtype=torch.float64)
    weights = (classes[:, None] - classes[None, :]) ** 2
    expected = observed.sum(1)[:, None] * observed.sum(0)[None, :] / total
    disagreement = (weights * expected).sum()
    if disagreement == 0:
        return math.nan
    return (1 - (weights * observed).sum() / disagreement).item()


def one_vs_rest_auroc(probabilities: Tensor, labels: Tensor) -> Tensor:
    """AUROC of each class against the others: float64 (K,) from ``probabilities`` (N, K) and
    ``labels`` int (N,); NaN for a class that is absent from, or is all of, the labels.

    Computed as the Mann-Whitney statistic: the probability that a random image of the class
    scores higher than a random other one, ties counting half (the area under the ROC curve
    with ties, as scikit-learn's ``roc_auc_score``)."""
    scores = probabilities.double().cpu().numpy()
    truth = labels.cpu().numpy()
    values = []
    for k in range(scores.shape[1]):
        positive = truth == k
        n_pos, n_neg = int(positive.sum()), int((~positive).sum())
        if n_pos == 0 or n_neg == 0:
            values.append(math.nan)
            continue
        ranks = rankdata(scores[:, k])
        values.append((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return torch.tensor(values, dtype=torch.float64)


def multiclass_scores(probabilities: Tensor, labels: Tensor, class_names: tuple[str, ...] | list[str]) -> dict[str, float]:
    """Every score of a test set: :data:`SCORES` (``auroc`` the mean of the finite per-class
    AUROCs), ``auroc_<class>`` per class where defined, ``recall_<class>`` per class present,
    and the confusion counts ``confusion_<true>_<predicted>`` (class ids).

    Args:
        probabilities: (N, K) float, each row a distribution over the classes.
        labels: (N,) int64 class ids in ``0 ... K-1``.
        class_names: the K class names.
    """
    num_classes = len(class_names)
    confusion = confusion_matrix(probabilities.argmax(1), labels, num_classes)
    support = confusion.sum(1)
    per_class = one_vs_rest_auroc(probabilities, labels)
    finite = per_class[torch.isfinite(per_class)]
    total = int(support.sum())
    result = {
        "accuracy": confusion.diagonal().sum().item() / total if total else math.nan,
        "balanced_accuracy": balanced_accuracy(confusion),
        "macro_f1": macro_f1(confusion),
        "auroc": finite.mean().item() if finite.numel() else math.nan,
        "kappa": quadratic_kappa(confusion),
    }
    result.update({f"auroc_{name}": value.item() for name, value in zip(class_names, per_class) if math.isfinite(value)})
    result.update(
        {f"recall_{name}": confusion[k, k].item() / support[k].item() for k, name in enumerate(class_names) if support[k] > 0}
    )
    result.update({f"confusion_{i}_{j}": float(confusion[i, j]) for i in range(num_classes) for j in range(num_classes)})
    return result


def confusion_from_scores(values: dict[str, float], num_classes: int) -> Tensor | None:
    """The confusion counts int64 (K, K) that :func:`multiclass_scores` put in ``values``,
    None when they are not all there."""
    keys = [[f"confusion_{i}_{j}" for j in range(num_classes)] for i in range(num_classes)]
    if any(key not in values for row in keys for key in row):
        return None
    return torch.tensor([[round(values[key]) for key in row] for row in keys], dtype=torch.int64)


class MulticlassScores(Metric):
    """:func:`multiclass_scores` accumulated over batches: ``update(probabilities (N, K),
    labels (N,))``; ``compute()`` -> the dict of scores.

    Args:
        class_names: the K class names, in the model's output order.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, class_names: tuple[str, ...] | list[str]) -> None:
        super().__init__()
        self.class_names = tuple(class_names)
        self.add_state("probabilities", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")

    def update(self, probabilities: Tensor, labels: Tensor) -> None:
        self.probabilities.append(probabilities.detach().float())
        self.labels.append(labels.detach().long())

    def compute(self) -> dict[str, float]:
        if not self.labels:
            raise ValueError("MulticlassScores: no batch was seen")
        return multiclass_scores(dim_zero_cat(self.probabilities), dim_zero_cat(self.labels), self.class_names)


def bootstrap_scores(
    probabilities: Tensor, labels: Tensor, class_names: tuple[str, ...] | list[str], *, n_resamples: int = 1000,
    confidence: float = 0.95, seed: int = 0,
) -> dict[str, tuple[float, float, float]]:
    """Each score of :data:`SCORES` on the test set with its percentile-bootstrap interval:
    ``{score: (value, low, high)}``. Every resample draws N images with replacement and
    computes all the scores on them (resamples on which a score is NaN are left out of its
    percentiles; NaN bounds if all are)."""
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")
    full = multiclass_scores(probabilities, labels, class_names)
    rng = np.random.default_rng(seed)
    drawn = {name: [] for name in SCORES}
    for _ in range(n_resamples):
        rows = torch.from_numpy(rng.integers(0, len(labels), len(labels)))
        scores = multiclass_scores(probabilities[rows], labels[rows], class_names)
        for name in SCORES:
            drawn[name].append(scores[name])
    result = {}
    for name in SCORES:
        values = np.array(drawn[name], dtype=np.float64)
        values = values[np.isfinite(values)]
        bounds = np.percentile(values, [50 * (1 - confidence), 50 * (1 + confidence)]) if values.size else (math.nan, math.nan)
        result[name] = (full[name], float(bounds[0]), float(bounds[1]))
    return result
