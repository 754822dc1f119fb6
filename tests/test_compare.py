"""``siteflow-compare``: paired tests between two runs, checked on hand-written result files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from siteflow.cli import compare_main
from siteflow.metrics import holm_adjust, paired_bootstrap_test, wilcoxon_signed_rank
from siteflow.reporting import NoFinishedRun, compare_runs, read_run

SEGMENTATION = ["model", "site", "image_id", "dice_vessel", "dice_mean"]


def write_run(folder: Path, rows: list[list], header: list[str] = SEGMENTATION, summary: dict | None = None) -> Path:
    """A finished run folder with ``results/summary.json`` and ``test_results/samples.csv``."""
    (folder / "results").mkdir(parents=True)
    (folder / "results" / "summary.json").write_text(json.dumps(summary or {"metrics": []}))
    (folder / "test_results").mkdir()
    with open(folder / "test_results" / "samples.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    return folder


def dice_rows(site_values: dict[str, list[float]], model: str = "task_2") -> list[list]:
    return [[model, site, f"img{i}", v, v] for site, values in site_values.items() for i, v in enumerate(values)]


BASE = [0.5, 0.6, 0.7, 0.4, 0.55, 0.65, 0.3, 0.8]


def test_a_known_difference_is_found(tmp_path):
    a = write_run(tmp_path / "a", dice_rows({"site1": [v + 0.1 for v in BASE], "site2": BASE}))
    b = write_run(tmp_path / "b", dice_rows({"site1": BASE, "site2": BASE}))
    site1, site2 = compare_runs(read_run(a), read_run(b), n_resamples=500)
    assert (site1.site, site1.metric, site1.n_images, site1.seeds_a, site1.seeds_b) == ("site1", "dice", 8, 1, 1)
    assert site1.value_a - site1.value_b == pytest.approx(0.1)
    # every image is 0.1 better: every resample says so; Wilcoxon's exact p for 8 of 8 positive is 2 / 2**8
    assert (site1.bootstrap.estimate, site1.bootstrap.low, site1.bootstrap.high) == pytest.approx((0.1, 0.1, 0.1))
    assert site1.bootstrap.p_value == 2 / 501  # no resample at or below 0: (1 + 0) / (B + 1), two-sided, never 0
    assert site1.wilcoxon_p == pytest.approx(2 / 2**8)
    # identical results: no difference, p = 1
    assert (site2.bootstrap.estimate, site2.bootstrap.low, site2.bootstrap.high, site2.bootstrap.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert site2.wilcoxon_p == 1.0


def test_a_local_run_enters_with_each_sites_own_model(tmp_path):
    # local: site1's model is 0.1 better on site1, site2's 0.2 better on site2, each no better elsewhere
    rows = dice_rows({"site1": [v + 0.1 for v in BASE], "site2": BASE}, model="site1")
    rows += dice_rows({"site1": BASE, "site2": [v + 0.2 for v in BASE]}, model="site2")
    a = write_run(tmp_path / "local", rows)
    (a / "processed_config.yaml").write_text("strategy:\n  name: local\n")
    b = write_run(tmp_path / "fedavg", dice_rows({"site1": BASE, "site2": BASE}, model="round3"))
    site1, site2 = compare_runs(read_run(a), read_run(b), n_resamples=100)
    assert site1.bootstrap.estimate == pytest.approx(0.1) and site2.bootstrap.estimate == pytest.approx(0.2)
    # a model named explicitly is that model on every site
    site1, site2 = compare_runs(read_run(a), read_run(b), model_a="site2", n_resamples=100)
    assert site1.bootstrap.estimate == pytest.approx(0.0) and site2.bootstrap.estimate == pytest.approx(0.2)
    # a local run tested with one site's model only says which sites lack their own
    write_run(tmp_path / "partial", dice_rows({"site1": BASE, "site2": BASE}, model="site2"))
    (tmp_path / "partial" / "processed_config.yaml").write_text("strategy:\n  name: local\n")
    with pytest.raises(ValueError, match=r"samples.csv: a local run .* test site\(s\) site1 have none \(models: site2\)"):
        compare_runs(read_run(tmp_path / "partial"), read_run(b))
    # a local run without a model named as a test site says what it looked for
    write_run(tmp_path / "renamed", dice_rows({"site1": BASE}, model="alone"))
    (tmp_path / "renamed" / "processed_config.yaml").write_text("strategy:\n  name: local\n")
    with pytest.raises(ValueError, match=r"samples.csv: no model named as its test site \(models: alone\)"):
        compare_runs(read_run(tmp_path / "renamed"), read_run(b))


def test_a_noisy_difference_has_an_interval_around_it(tmp_path):
    noise = [0.05, -0.04, 0.02, 0.0, -0.03, 0.06, -0.01, 0.03]
    a = write_run(tmp_path / "a", dice_rows({"site1": [v + d for v, d in zip(BASE, noise)]}))
    b = write_run(tmp_path / "b", dice_rows({"site1": BASE}))
    (result,) = compare_runs(read_run(a), read_run(b), n_resamples=1000)
    assert result.bootstrap.estimate == pytest.approx(np.mean(noise))
    assert result.bootstrap.low < 0 < result.bootstrap.high  # not significant
    assert 0.05 < result.bootstrap.p_value <= 1
    reference = paired_bootstrap_test(np.mean, np.array(noise), n_resamples=1000)  # rounding of the CSV aside
    assert result.bootstrap.low == pytest.approx(reference.low, abs=1e-6)
    assert result.wilcoxon_p == pytest.approx(wilcoxon_signed_rank(noise)[1])


def test_paired_bootstrap_p_value_by_hand():
    # two samples, differences 1 and -1: a resample's mean is 1, 0 or -1 with chances 1/4, 1/2, 1/4
    test = paired_bootstrap_test(np.mean, np.array([1.0, -1.0]), n_resamples=20000, seed=3)
    assert test.estimate == 0.0
    assert test.p_value == 1.0  # P(d* <= 0) = P(d* >= 0) = 3/4
    one_sided = paired_bootstrap_test(np.mean, np.array([1.0, 1.0, 0.0]), n_resamples=20000, seed=3)
    assert one_sided.p_value == pytest.approx(2 / 27, abs=0.01)  # only the all-zero resample: 2 * (1/3)**3
    undefined = paired_bootstrap_test(lambda d: float("nan"), np.array([1.0, 2.0]), n_resamples=10)
    assert np.isnan(undefined.p_value) and np.isnan(undefined.low)


def test_holm_adjustment_by_hand():
    # sorted p: 0.01, 0.02, 0.04 -> 3 * 0.01, max(0.03, 2 * 0.02), max(0.04, 1 * 0.04); NaN is left out of m
    adjusted = holm_adjust([0.04, 0.01, float("nan"), 0.02])
    assert adjusted[[1, 3, 0]] == pytest.approx([0.03, 0.04, 0.04])
    assert np.isnan(adjusted[2])
    assert holm_adjust([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1, order kept monotone


def test_runs_over_seeds_are_compared_on_each_images_mean(tmp_path):
    a = tmp_path / "a"
    write_run(a / "seed0", dice_rows({"site1": BASE}))
    write_run(a / "seed1", dice_rows({"site1": [v + 0.2 for v in BASE]}))
    (a / "results").mkdir()
    (a / "results" / "summary.json").write_text("{}")
    b = write_run(tmp_path / "b", dice_rows({"site1": BASE}))
    (result,) = compare_runs(read_run(a), read_run(b), n_resamples=200)
    assert (result.seeds_a, result.seeds_b) == (2, 1)
    assert result.bootstrap.estimate == pytest.approx(0.1)  # (x + x + 0.2) / 2 - x
    assert result.value_a == pytest.approx(np.mean(BASE) + 0.1)


def test_multilabel_runs_are_compared_by_auroc(tmp_path):
    header = ["model", "site", "image_id", "p_a", "p_b", "y_a", "y_b"]
    labels = [(1, 0), (1, 1), (0, 1), (0, 0)]
    perfect = [[0.9, 0.1], [0.8, 0.9], [0.2, 0.7], [0.1, 0.2]]  # AUROC 1 for both labels
    shuffled = [[0.9, 0.6], [0.1, 0.9], [0.8, 0.5], [0.2, 0.8]]  # a: 2 of 4 pairs ordered, b: 2 of 4: 0.5 each
    rows = lambda scores: [["m", "s1", f"i{k}", *p, *y] for k, (p, y) in enumerate(zip(scores, labels))]
    a = write_run(tmp_path / "a", rows(perfect), header)
    b = write_run(tmp_path / "b", rows(shuffled), header)
    (result,) = compare_runs(read_run(a), read_run(b), n_resamples=300)
    assert result.metric == "auroc"
    assert (result.value_a, result.value_b) == pytest.approx((1.0, 0.5))
    assert result.bootstrap.estimate == pytest.approx(0.5)
    assert result.bootstrap.low <= 0.5 <= result.bootstrap.high
    assert np.isnan(result.wilcoxon_p)


def test_different_sites_or_images_are_refused_with_their_names(tmp_path):
    a = write_run(tmp_path / "a", dice_rows({"site1": BASE, "site2": BASE}))
    b = write_run(tmp_path / "b", dice_rows({"site1": BASE, "site3": BASE}))
    with pytest.raises(ValueError, match=rf"different sites: only in {a}: site2; only in {b}: site3"):
        compare_runs(read_run(a), read_run(b))
    c = write_run(tmp_path / "c", dice_rows({"site1": BASE[:7], "site2": BASE}))
    with pytest.raises(ValueError, match=rf"different test images of site site1: only in {a}: img7; only in {c}: none"):
        compare_runs(read_run(a), read_run(c))
    with pytest.raises(ValueError, match="no model named 'nope'"):
        compare_runs(read_run(a), read_run(a), model_a="nope")


def test_compare_command_prints_and_writes_the_table(tmp_path, capsys):
    a = write_run(tmp_path / "a", dice_rows({"site1": [v + 0.1 for v in BASE]}))
    b = write_run(tmp_path / "b", dice_rows({"site1": BASE}))
    assert compare_main([str(a), str(b), "--resamples", "100", "-o", str(tmp_path / "out.csv")]) == 0
    assert "site1" in capsys.readouterr().out
    with open(tmp_path / "out.csv") as handle:
        (row,) = csv.DictReader(handle)
    assert (row["site"], float(row["difference"]), float(row["p_bootstrap"])) == ("site1", pytest.approx(0.1), pytest.approx(2 / 101, abs=1e-6))

    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as raised:
        compare_main([str(tmp_path / "empty"), str(b)])
    assert raised.value.code == 2
    assert f"{tmp_path / 'empty'} holds no finished run" in capsys.readouterr().err
    (tmp_path / "trained" / "results").mkdir(parents=True)
    (tmp_path / "trained" / "results" / "summary.json").write_text("{}")
    with pytest.raises(SystemExit):
        compare_main([str(tmp_path / "trained"), str(b)])
    assert "no test_results/samples.csv (for every seed): run predict_test.py on it first" in capsys.readouterr().err
    with pytest.raises(NoFinishedRun):
        read_run(tmp_path / "missing")


def test_a_repeated_run_is_read_with_the_seeds_its_summary_covers_only(tmp_path):
    # seed2/ is left over from an earlier --seeds 0,1,2 of the same folder; the summary is of 0,1
    a = tmp_path / "a"
    write_run(a / "seed0", dice_rows({"site1": BASE}))
    write_run(a / "seed1", dice_rows({"site1": BASE}))
    write_run(a / "seed2", dice_rows({"site1": [0.0] * len(BASE)}))
    (a / "results").mkdir()
    (a / "results" / "summary.json").write_text(json.dumps({"metrics": [], "seeds": [0, 1]}))
    run = read_run(a)
    assert sorted(run.folders) == [0, 1]
    b = write_run(tmp_path / "b", dice_rows({"site1": BASE}))
    (result,) = compare_runs(run, read_run(b), n_resamples=100)
    assert result.seeds_a == 2 and result.bootstrap.estimate == pytest.approx(0.0)
