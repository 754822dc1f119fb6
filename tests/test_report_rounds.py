"""The report draws each site's Dice round by round for a federated run (issue 30: a site that
does not learn is seen in the first rounds)."""

import base64
import io

import numpy as np
from PIL import Image

from siteflow.core.atomic import write_text
from siteflow.core.site_matrix import StageResult, matrix_csv
from siteflow.reporting.figures import round_curves
from siteflow.reporting.report import site_matrices_html
from siteflow.reporting.runs import FinishedRun

SITES = ["DRIVE", "STARE", "CHASE_DB1"]
ROUNDS = [(0.31, 0.28, 0.12), (0.45, 0.40, 0.02), (0.58, 0.50, 0.11), (0.66, 0.60, 0.18)]


def federated_run(folder):
    rows = [StageResult(f"round{i}", None, {s: {"dice": v} for s, v in zip(SITES, row)}) for i, row in enumerate(ROUNDS, 1)]
    write_text(folder / "results" / "site_matrix_dice.csv", matrix_csv(rows, SITES, "dice"))
    return FinishedRun(folder, {"metrics": ["dice"]}, {"strategy": {"name": "fedavg"}}, {None: folder})


def test_each_site_is_a_line_through_its_dice_of_every_round(tmp_path):
    run = federated_run(tmp_path)
    figure = round_curves(tmp_path / "results" / "site_matrix_dice.csv", "dice")
    (ax,) = figure.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines) == SITES
    for j, site in enumerate(SITES):
        assert list(lines[site].get_xdata()) == [1, 2, 3, 4]
        assert np.allclose(lines[site].get_ydata(), [row[j] for row in ROUNDS])
    assert [label.get_text() for label in ax.get_xticklabels()] == ["round1", "round2", "round3", "round4"]
    html = site_matrices_html(run)
    assert html.count("<img") == 1 and 'alt="' in html and "dice of each site round by round" in html
    source = html.split('src="', 1)[1].split('"', 1)[0]
    picture = Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1])))
    assert picture.size == (540, 288)  # 6 x 3.2 inches at 90 dpi


def test_sites_trained_in_turn_get_no_round_curves(tmp_path):
    rows = [StageResult(site, site, {s: {"dice": 0.5} for s in SITES}) for site in SITES]
    path = tmp_path / "site_matrix_dice.csv"
    write_text(path, matrix_csv(rows, SITES, "dice"))
    assert round_curves(path, "dice") is None
