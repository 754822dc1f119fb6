"""Site matrix, its summary (final mean, backward transfer) and the files written from it."""

from __future__ import annotations

import csv
import json

import pytest
from PIL import Image

from siteflow.core.site_matrix import StageResult, matrix_table, site_matrix, summarize
from siteflow.engine.results import write_results

SITES = ["a", "b", "c"]


def rows_of(matrix: list[list[float]], trained: list[str | None]) -> list[StageResult]:
    return [
        StageResult(f"after_{site or 'joint'}", site, {s: {"dice": v, "dice_sample": v / 2} for s, v in zip(SITES, values)})
        for values, site in zip(matrix, trained)
    ]


SEQUENTIAL = rows_of([[0.8, 0.3, 0.2], [0.6, 0.9, 0.4], [0.5, 0.7, 0.85]], ["a", "b", "c"])


def test_sequential_summary_by_hand():
    summary = summarize(SEQUENTIAL, SITES, "dice")
    assert summary["final_per_site"] == {"a": 0.5, "b": 0.7, "c": 0.85}
    assert summary["final_mean"] == pytest.approx((0.5 + 0.7 + 0.85) / 3)
    # forgetting on a: 0.5 - 0.8, on b: 0.7 - 0.9; the last site does not count
    assert summary["backward_transfer"] == pytest.approx(((0.5 - 0.8) + (0.7 - 0.9)) / 2)


def test_cycles_compare_with_the_stage_that_last_trained_each_site():
    rows = rows_of([[0.8, 0.1, 0.1], [0.5, 0.9, 0.1], [0.85, 0.6, 0.1], [0.7, 0.95, 0.2]], ["a", "b", "a", "b"])
    summary = summarize(rows, SITES, "dice")
    assert summary["backward_transfer"] == pytest.approx(0.7 - 0.85)  # only a; c was never trained
    assert summary["final_per_site"]["c"] == pytest.approx(0.2)


def test_local_keeps_each_sites_own_model_and_has_no_backward_transfer():
    summary = summarize(SEQUENTIAL, SITES, "dice", own_model_per_site=True)
    assert summary["final_per_site"] == {"a": 0.8, "b": 0.9, "c": 0.85}
    assert summary["backward_transfer"] is None


def test_joint_has_one_row_and_no_backward_transfer():
    rows = rows_of([[0.7, 0.8, 0.9]], [None])
    summary = summarize(rows, SITES, "dice")
    assert summary["final_mean"] == pytest.approx(0.8)
    assert summary["backward_transfer"] is None


def test_missing_values_are_nan():
    rows = [StageResult("s", "a", {"a": {"dice": 0.5}})]
    matrix = site_matrix(rows, SITES, "dice")
    assert matrix.shape == (1, 3) and matrix[0, 0] == 0.5
    assert all(v != v for v in matrix[0, 1:])


def test_written_files_read_back(tmp_path):
    summary = write_results(tmp_path, SEQUENTIAL, SITES, experiment="demo/x", strategy="sequential", metrics=("dice", "dice_sample"))
    with open(tmp_path / "site_matrix_dice.csv") as handle:
        table = list(csv.reader(handle))
    assert table[0] == ["after_stage", "trained_site", "a", "b", "c", "mean"]
    assert [float(v) for v in table[2][2:5]] == [0.6, 0.9, 0.4]
    assert float(table[3][5]) == pytest.approx((0.5 + 0.7 + 0.85) / 3, abs=1e-6)
    with open(tmp_path / "site_matrix_dice_sample.csv") as handle:
        assert float(list(csv.reader(handle))[1][2]) == pytest.approx(0.4)
    for metric in ("dice", "dice_sample"):
        with Image.open(tmp_path / f"site_matrix_{metric}.png") as picture:
            assert picture.format == "PNG" and picture.width > 200
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    assert saved["dice_sample"]["final_per_site"]["c"] == pytest.approx(0.425)
    assert not list(tmp_path.glob(".*tmp*")), "temporary files left behind"


def test_terminal_table_lists_stages_and_values():
    lines = matrix_table(SEQUENTIAL, SITES, "dice").splitlines()
    assert lines[0].split() == ["after", "\\", "test", "a", "b", "c"]
    assert lines[2].split() == ["after_b", "0.6000", "0.9000", "0.4000"]
