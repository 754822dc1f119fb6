"""Confidence intervals of per-sample results, and paired tests between two models."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

ArrayLike = Sequence[float] | np.ndarray | torch.Tensor


def _as_numpy(values: ArrayLike) -> np.ndarray:
    """``values`` as a float64 numpy array (tensors are detached and moved to the CPU)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64)


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")


def mean_confidence_interval(values: ArrayLike, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``values`` with its Student-t confidence interval.

    Args:
        values: ``n >= 1`` numbers (any shape; flattened).
        confidence: coverage of the interval.

    Returns:
        ``(mean, low, high)`` with ``low, high = mean -/+ t_{(1 + confidence) / 2, n - 1} * s / sqrt(n)``,
        ``s`` the sample standard deviation; ``(value, nan, nan)`` for a single value.
    """
    _check_confidence(confidence)
    x = _as_numpy(values).ravel()
    if x.size == 0:
        raise ValueError("values must not be empty")
    mean = float(x.mean())
    if x.size == 1:
        return mean, math.nan, math.nan
    half_width = float(stats.t.ppf((1 + confidence) / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half_width, mean + half_width


def bootstrap_confidence_interval(
    statistic: Callable[..., float],
    *arrays: ArrayLike,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """A statistic of paired samples with its percentile-bootstrap confidence interval.

    Each resample draws ``n`` sample indices with replacement and applies ``statistic`` to the
    rows of every array at those indices, so paired arrays (e.g. scores and targets) stay paired.
    Resamples on which ``statistic`` is NaN (e.g. an AUROC of a resample holding one class
    only) are left out of the percentiles.

    Args:
        statistic: function of numpy arrays (one per entry of ``arrays``) returning a number.
        arrays: one or more arrays with the same length ``n >= 1`` along axis 0.
        n_resamples: number of bootstrap resamples.
        confidence: coverage of the interval.
        seed: seed of the resampling generator; equal seeds give equal intervals.

    Returns:
        ``(statistic(*arrays), low, high)``, the bounds being the ``(1 -/+ confidence) / 2``
        percentiles of the resampled statistics (NaN if every resample gave NaN).
    """
    _check_confidence(confidence)
    data = _paired_arrays(arrays)
    return float(statistic(*data)), *_percentile_interval(_resample(statistic, data, n_resamples, seed), confidence)


@dataclass(frozen=True)
class PairedTest:
    """A difference between two models on the same samples: the estimate with its confidence
    interval ``(low, high)`` and the two-sided ``p_value`` of "no difference"."""

    estimate: float
    low: float
    high: float
    p_value: float


def paired_bootstrap_test(
    difference: Callable[..., float],
    *arrays: ArrayLike,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedTest:
    """A difference between two models, resampled over the samples they share.

    ``difference`` maps the rows of ``arrays`` (both models' values of each sample, kept
    together) to a number, e.g. ``mean(a - b)`` or ``auroc(a) - auroc(b)``; the samples are
    resampled with replacement as in :func:`bootstrap_confidence_interval`. The two-sided
    p-value of "no difference" is ``min(1, 2 * (1 + min(#(d* <= 0), #(d* >= 0))) / (B + 1))``
    over the ``B`` resampled differences ``d*`` that are not NaN (Davison and Hinkley's
    ``(1 + k) / (B + 1)``: ``B`` resamples cannot show a p-value below ``2 / (B + 1)``, so it is
    never 0); a difference that is 0 on every resample gives ``p = 1``.

    Returns:
        :class:`PairedTest`; NaN bounds and p-value if every resample gave NaN.
    """
    _check_confidence(confidence)
    data = _paired_arrays(arrays)
    resampled = _resample(difference, data, n_resamples, seed)
    low, high = _percentile_interval(resampled, confidence)
    extreme = min(int(np.sum(resampled <= 0)), int(np.sum(resampled >= 0)))
    p_value = min(1.0, 2 * (1 + extreme) / (resampled.size + 1)) if resampled.size else math.nan
    return PairedTest(float(difference(*data)), low, high, p_value)


def holm_adjust(p_values: ArrayLike) -> np.ndarray:
    """Holm's step-down adjustment of ``p_values`` for multiple comparisons (controls the
    family-wise error rate): the k-th smallest of m p-values becomes
    ``max over j <= k of min(1, (m - j + 1) * p_(j))``; NaN stays NaN and does not count in m.

    Args:
        p_values: (m,) p-values of the family.

    Returns:
        (m,) float64 adjusted p-values, in the input's order.
    """
    p = _as_numpy(p_values).ravel()
    adjusted = np.full_like(p, np.nan)
    finite = np.flatnonzero(~np.isnan(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m = order.size
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def wilcoxon_signed_rank(differences: ArrayLike) -> tuple[float, float]:
    """Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, two-sided) of paired differences.

    Args:
        differences: (n,) per-sample differences ``a - b``; zeros are dropped (``"wilcox"``).

    Returns:
        ``(statistic, p_value)``; ``(0.0, 1.0)`` when every difference is 0 (no evidence of
        any), NaN for no sample.
    """
    d = _as_numpy(differences).ravel()
    if d.size == 0:
        return math.nan, math.nan
    if not np.any(d != 0):
        return 0.0, 1.0
    result = stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided")
    return float(result.statistic), float(result.pvalue)


def _paired_arrays(arrays: Sequence[ArrayLike]) -> list[np.ndarray]:
    """``arrays`` as numpy arrays, checked to be non-empty and of one length."""
    if not arrays:
        raise ValueError("at least one array is required")
    data = [_as_numpy(a) for a in arrays]
    n = len(data[0])
    if n == 0 or any(len(a) != n for a in data):
        raise ValueError(f"arrays must be non-empty and of one length, got lengths {[len(a) for a in data]}")
    return data


def _percentile_interval(resampled: np.ndarray, confidence: float) -> tuple[float, float]:
    """The ``(1 -/+ confidence) / 2`` percentiles of ``resampled`` (NaN, NaN if it is empty)."""
    if resampled.size == 0:
        return math.nan, math.nan
    low, high = np.percentile(resampled, [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(low), float(high)


def _resample(statistic: Callable[..., float], data: Sequence[np.ndarray], n_resamples: int, seed: int) -> np.ndarray:
    """``statistic`` on ``n_resamples`` bootstrap resamples of the rows of ``data`` (the same
    rows of every array), the NaN ones left out."""
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")
    n = len(data[0])
    rng = np.random.default_rng(seed)
    resampled = np.array([float(statistic(*(a[idx] for a in data))) for idx in rng.integers(0, n, size=(n_resamples, n))])
    return resampled[~np.isnan(resampled)]
