"""The partitioner: counts sum to the data set, follow the seed, and a Dirichlet draw with a
small alpha is skewed while a large one is near uniform (a chi-square statistic checked)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from siteflow.datasets.classification.partition import Partition, PartitionError, assign, assign_by_column

K, SITES = 5, 6
LABELS = {"train": np.random.default_rng(0).integers(0, K, 3000), "test": np.random.default_rng(1).integers(0, K, 600)}


def counts(sites: np.ndarray, labels: np.ndarray, num_sites: int = SITES) -> np.ndarray:
    """(sites, K) table of class counts."""
    return np.array([np.bincount(labels[sites == s], minlength=K) for s in range(num_sites)])


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "quantity"])
def test_counts_sum_to_the_data_set_and_follow_the_seed(scheme: str) -> None:
    partition = Partition(scheme=scheme, num_sites=SITES, alpha=0.5, seed=3)
    result = assign(partition, LABELS, K)
    for part, labels in LABELS.items():
        table = counts(result[part], labels)
        assert (table.sum(0) == np.bincount(labels, minlength=K)).all()
        assert table.sum() == len(labels) and result[part].min() >= 0 and result[part].max() < SITES
    again = assign(Partition(scheme=scheme, num_sites=SITES, alpha=0.5, seed=3), LABELS, K)
    other = assign(Partition(scheme=scheme, num_sites=SITES, alpha=0.5, seed=4), LABELS, K)
    assert all((again[p] == result[p]).all() for p in LABELS)
    assert any((other[p] != result[p]).any() for p in LABELS)


def label_skew(partition: Partition) -> float:
    """Mean over sites of the chi-square statistic of a site's training class counts against
    the data set's class mix, per sample (Cramér's phi squared): 0 for IID."""
    labels = LABELS["train"]
    table = counts(assign(partition, LABELS, K)["train"], labels, partition.num_sites)
    overall = np.bincount(labels, minlength=K) / len(labels)
    values = []
    for row in table:
        if row.sum():
            chi2 = stats.chisquare(row, overall * row.sum()).statistic
            values.append(chi2 / row.sum())
    return float(np.mean(values))


def test_dirichlet_alpha_sets_the_skew() -> None:
    small = np.mean([label_skew(Partition("dirichlet", SITES, alpha=0.1, seed=s)) for s in range(5)])
    large = np.mean([label_skew(Partition("dirichlet", SITES, alpha=1000.0, seed=s)) for s in range(5)])
    iid = np.mean([label_skew(Partition("iid", SITES, seed=s)) for s in range(5)])
    assert small > 1.0  # sites dominated by one or two classes: phi^2 near K - 1 at the extreme
    assert large < 0.02 and iid < 0.01  # near uniform: chi-square of sampling noise only, (K - 1) / n_site
    # the large-alpha statistic is no larger than sampling noise: p-value of each site's chi-square
    table = counts(assign(Partition("dirichlet", SITES, alpha=1000.0, seed=0), LABELS, K)["train"], LABELS["train"])
    overall = np.bincount(LABELS["train"], minlength=K) / len(LABELS["train"])
    assert min(stats.chisquare(row, overall * row.sum()).pvalue for row in table) > 0.001


def test_quantity_skew_keeps_the_label_mix() -> None:
    result = assign(Partition("quantity", SITES, alpha=0.5, seed=1), LABELS, K)["train"]
    sizes = np.bincount(result, minlength=SITES)
    assert sizes.max() > 2 * sizes.min()  # unequal sizes
    assert label_skew(Partition("quantity", SITES, alpha=0.5, seed=1)) < 0.05  # the same mix everywhere


def test_errors_name_the_option() -> None:
    with pytest.raises(PartitionError, match="num_sites=10 is more than the 4 training samples"):
        assign(Partition("iid", 10), {"train": np.array([0, 1, 0, 1])}, 2)
    with pytest.raises(PartitionError, match="min_samples=50 training samples: raise alpha"):
        assign(Partition("dirichlet", 10, alpha=0.01, min_samples=50), {"train": np.arange(600) % 3}, 3)
    with pytest.raises(PartitionError, match="scheme must be one of"):
        Partition("random")
    with pytest.raises(PartitionError, match="alpha must be positive"):
        Partition("dirichlet", alpha=0)
    with pytest.raises(PartitionError, match="needs the metadata column"):
        Partition("column")


def test_by_column() -> None:
    names, result = assign_by_column(Partition("column", column="hospital"), {"train": ["b", "a", "b"], "test": ["a", "c"]})
    assert names == ["a", "b", "c"]
    assert result["train"].tolist() == [1, 0, 1] and result["test"].tolist() == [0, 2]
