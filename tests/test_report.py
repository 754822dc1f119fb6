"""``siteflow-report``: one self-contained HTML file over real tiny runs, read back."""

from __future__ import annotations

import base64
import csv
import io
import json
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from experiments import tiny_config
from siteflow.cli import predict_main, report_main, train_main
from siteflow.reporting.report import OVERLAY_WIDTH


class ReportReader(HTMLParser):
    """Collects the report's images, its sections and the cells of every table by id."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.alts: list[str] = []
        self.headings: list[str] = []
        self.tables: dict[str, list[list[tuple[str | None, str]]]] = {}
        self.scripts = 0
        self._table: str | None = None
        self._cell: list | None = None
        self._tag: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self._tag = tag
        if tag == "img":
            self.images.append(attrs["src"])
            self.alts.append(attrs["alt"])
        elif tag == "table":
            self._table = attrs["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag == "td" and self._table is not None:
            self._cell = [attrs.get("data-value"), ""]
        elif tag == "script":
            self.scripts += 1

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.tables[self._table][-1].append(tuple(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data
        elif self._tag == "h2":
            self.headings.append(data)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A sequential study over seeds 0 and 1 and a joint run of one seed, both tested by
    predict_test.py."""
    root = tmp_path_factory.mktemp("report")
    folders = []
    for strategy, seeds in (("sequential", ["--seeds", "0,1"]), ("joint", [])):
        config = tiny_config(root, strategy)
        common = ["-c", str(config), "-n", "r", "--exps-root", str(root / "exps")]
        assert train_main(common + seeds) == 0
        assert predict_main(common) == 0
        folders.append(root / "exps" / strategy / "r")
    return folders


@pytest.mark.slow
def test_report_embeds_every_part_and_the_summary_of_each_run(runs, tmp_path, capsys):
    output = tmp_path / "report.html"
    assert report_main([str(runs[0]), str(runs[1]), "-o", str(output), "--resamples", "50"]) == 0
    reader = ReportReader()
    reader.feed(output.read_text())
    reader.close()
    assert reader.headings == ["Summary", "Paired comparisons", "Site matrices", "Test results", "Learning curves", "Configs"]
    assert "http" not in output.read_text().replace("http-equiv", "")  # nothing to fetch
    assert reader.scripts == 1
    # 2 runs x 2 metrics heatmaps, 2 learning-curve figures, 2 sites x 2 runs x (overlay grid, best, worst) (first seed only)
    assert len(reader.images) == 4 + 2 + 4 + 8
    for source in reader.images:
        assert source.startswith("data:image/png;base64,")
        picture = Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1])))
        picture.load()
        assert picture.size[0] > 50 and picture.size[1] > 50

    summaries = {run.parent.name + "/r": json.loads((run / "results" / "summary.json").read_text()) for run in runs}
    rows = reader.tables["summary"][1:]  # the header row has no cells
    assert len(rows) == sum(len(s["metrics"]) * (2 + len(s[s["metrics"][0]]["final_per_site"])) for s in summaries.values())
    for (_, run), (_, metric), (_, quantity), (_, site), (value, shown), (std, _), (_, each) in rows:
        entry = summaries[run][metric][quantity]
        entry = entry[site] if site else entry
        if isinstance(entry, dict):  # over seeds
            assert float(value) == entry["mean"] and float(std) == entry["std"]
            assert [float(v) for v in each.split(", ")] == pytest.approx(entry["values"], abs=5e-5)
        elif entry is None:
            assert value is None and shown == ""
        else:
            assert float(value) == entry and std is None
        assert value is None or shown == f"{float(value):.4f}"

    for run, results in ((runs[0], runs[0] / "seed0" / "test_results"), (runs[1], runs[1] / "test_results")):
        with open(results / "samples.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        model = rows[-1]["model"]
        for site in ("site1", "site2"):
            scored = sorted((float(r["dice_mean"]), r["image_id"]) for r in rows if r["model"] == model and r["site"] == site)
            for kind, (dice, image_id) in (("best", scored[-1]), ("worst", scored[0])):
                alt = f"{model} on {site}: {kind} image {image_id} (Dice {dice:.4f}): image, truth, prediction"
                (source,) = [src for src, a in zip(reader.images, reader.alts) if a == alt]
                picture = results / "overlays" / model / site / f"{kind}_{image_id}.png"
                with Image.open(picture) as saved, Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))) as shown:
                    if saved.width > OVERLAY_WIDTH:  # shrunk by width to the report's column, aspect kept
                        saved = saved.resize((OVERLAY_WIDTH, round(saved.height * OVERLAY_WIDTH / saved.width)), Image.Resampling.LANCZOS)
                    assert shown.size == saved.size
                    assert np.array_equal(np.asarray(shown.convert("RGB")), np.asarray(saved.convert("RGB")))
            assert [a for a in reader.alts if a.startswith(f"{model} on {site}: ")][1:] == [
                f"{model} on {site}: best image {scored[-1][1]} (Dice {scored[-1][0]:.4f}): image, truth, prediction",
                f"{model} on {site}: worst image {scored[0][1]} (Dice {scored[0][0]:.4f}): image, truth, prediction",
            ]

    configs = {cells[0][1]: [c[1] for c in cells[1:]] for cells in reader.tables["configs"][1:]}
    assert configs["strategy.name"] == ["sequential", "joint"]
    differences = {cells[0][1]: [c[1] for c in cells[1:]] for cells in reader.tables["config-differences"][1:]}
    assert differences == {key: values for key, values in configs.items() if values[0] != values[1]}
    assert differences["strategy.name"] == ["sequential", "joint"] and len(differences) < len(configs)
    comparison = reader.tables["compare-joint/r"][1:]
    assert sorted(cells[0][1] for cells in comparison) == ["site1", "site2"]
    assert all(0 <= float(cells[10][0]) <= 1 for cells in comparison)  # p-values


def test_report_of_a_folder_without_a_finished_run_is_refused(runs, tmp_path, capsys):
    (tmp_path / "unfinished" / "checkpoints").mkdir(parents=True)
    with pytest.raises(SystemExit) as raised:
        report_main([str(runs[0]), str(tmp_path / "unfinished"), "-o", str(tmp_path / "report.html")])
    assert raised.value.code == 2
    assert f"{tmp_path / 'unfinished'} holds no finished run (no results/summary.json)" in capsys.readouterr().err
    assert not (tmp_path / "report.html").exists()


def test_a_run_folder_name_is_escaped_in_the_report(tmp_path):
    from siteflow.reporting.report import write_report
    from siteflow.reporting.runs import read_run

    folder = tmp_path / "exps" / "a<b>&c" / "note"
    (folder / "results").mkdir(parents=True)
    (folder / "results" / "summary.json").write_text(json.dumps({"metrics": []}))
    text = write_report([read_run(folder)], tmp_path / "report.html").read_text()
    assert "<b>" not in text and "a&lt;b&gt;&amp;c/note" in text


def test_a_summary_that_does_not_parse_is_refused_naming_the_file(tmp_path, capsys):
    folder = tmp_path / "exps" / "c" / "n"
    (folder / "results").mkdir(parents=True)
    (folder / "results" / "summary.json").write_text('{"metrics": [')  # cut short
    with pytest.raises(SystemExit) as raised:
        report_main([str(folder), "-o", str(tmp_path / "report.html")])
    assert raised.value.code == 2
    assert f"{folder / 'results' / 'summary.json'}: unreadable" in capsys.readouterr().err
    assert not (tmp_path / "report.html").exists()


@pytest.mark.parametrize("own_models, expected", [
    (True, ["site1 on site1: best image b (Dice 0.9000), worst a (Dice 0.1000)",
            "site2 on site2: best image a (Dice 0.8000), worst b (Dice 0.2000)"]),
    (False, ["site2 on site1: best image a (Dice 0.5000), worst b (Dice 0.4000)",
             "site2 on site2: best image a (Dice 0.8000), worst b (Dice 0.2000)"]),
])
def test_the_best_and_worst_images_are_those_of_each_sites_final_model(tmp_path, own_models, expected):
    from siteflow.reporting.report import _extremes

    rows = [["site1", "site1", "a", 0.1], ["site1", "site1", "b", 0.9], ["site1", "site2", "a", 0.3], ["site1", "site2", "b", 0.6],
            ["site2", "site1", "a", 0.5], ["site2", "site1", "b", 0.4], ["site2", "site2", "a", 0.8], ["site2", "site2", "b", 0.2]]
    path = tmp_path / "samples.csv"
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows([["model", "site", "image_id", "dice_mean"], *rows])
    html = _extremes(path, "", overlays=False, own_models=own_models)
    assert [part in html for part in expected] == [True, True] and html.count("best image") == 2
    with open(path, "w", newline="") as handle:  # site2's own model not tested
        csv.writer(handle).writerows([["model", "site", "image_id", "dice_mean"], *rows[:4]])
    html = _extremes(path, "", overlays=False, own_models=True)
    assert "site2 on site2: not tested" in html and html.count("best image") == 1
