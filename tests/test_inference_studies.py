"""siteflow-infer on models of other kinds of studies (tiny real runs): a 3D U-Net on volumes,
FedBN's per-site models, and FFL's per-site multi-label classifiers, each against what
predict_test.py wrote for the same model and inputs."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from experiments import tiny_config
from siteflow.cli import infer_main, predict_main, train_main
from siteflow.config import load_config
from siteflow.core.registry import DATASETS
from test_ffl import cxr_config
from test_volumes import tiny_demo3d

pytestmark = pytest.mark.slow


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def train_and_predict(config: Path, tmp_path: Path) -> tuple[list[str], Path]:
    exps = ["--exps-root", str(tmp_path / "exps")]
    assert train_main(["-c", str(config), "-n", "run", *exps]) == 0
    assert predict_main(["-c", str(config), "-n", "run", "-s", *exps]) == 0
    return exps, tmp_path / "exps" / config.stem / "run"


def test_a_3d_model_predicts_on_the_source_grid_what_predict_test_scored(tmp_path):
    config_path = tiny_demo3d(tmp_path)
    exps, run = train_and_predict(config_path, tmp_path)
    config = load_config(config_path)
    test = DATASETS.get("synthetic_volumes")("test", **config.sites[1].dataset.kwargs)
    case = test.cases[0]
    assert infer_main(["-c", str(config_path), "-n", "run", *exps, "--site", "site2", str(case.image), "-o", str(tmp_path / "out"),
                       "--no-progress"]) == 0
    expected = sitk.ReadImage(str(run / "test_results" / "nifti" / "site2" / "site2" / f"{case.id}_pred.nii.gz"))  # site2's own model
    (written,) = [p for p in (tmp_path / "out").glob("*.nii.gz")]
    written = sitk.ReadImage(str(written))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(expected))
    for name in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(written, name)() == pytest.approx(getattr(sitk.ReadImage(str(case.image)), name)()), name
    (row,) = rows(tmp_path / "out" / "predictions.csv")
    voxel = float(np.prod(written.GetSpacing()))
    assert float(row["mm3_organ"]) == pytest.approx(int(row["voxels_organ"]) * voxel, rel=1e-5)


def test_fedbn_sites_each_have_their_own_model(tmp_path, capsys):
    config = tiny_config(tmp_path, "fedavg", sites=2, common={"strategy": {"kwargs": {"rounds": 1, "keep_local_norm": True}}})
    exps, run = train_and_predict(config, tmp_path)
    images = next((tmp_path / "data").glob("*/Domain1/test/image"))
    with pytest.raises(SystemExit):
        infer_main(["-c", str(config), "-n", "run", *exps, str(images), "-o", str(tmp_path / "x")])
    assert "keeps one model per site (site1, site2): choose one with --site" in capsys.readouterr().err
    (stage_dir,) = (run / "test_results" / "nifti").iterdir()
    masks = {}
    for site in ("site1", "site2"):
        assert infer_main(["-c", str(config), "-n", "run", *exps, "--site", site, str(images), "-o", str(tmp_path / site), "--no-progress"]) == 0
        masks[site] = {p.stem: np.asarray(Image.open(p)) for p in (tmp_path / site).glob("*.png")}
    for path in (stage_dir / "site1").glob("*_pred.nii.gz"):  # predict_test.py tests site1 with its own model
        np.testing.assert_array_equal(masks["site1"][path.name.removesuffix("_pred.nii.gz")], sitk.GetArrayFromImage(sitk.ReadImage(str(path))))
    assert any(not np.array_equal(masks["site1"][k], masks["site2"][k]) for k in masks["site1"])


def test_an_ffl_sites_classifier_answers_its_labels_with_its_validation_thresholds(tmp_path):
    config = cxr_config(tmp_path, "ffl", rounds=1, weighting="samples")
    exps, run = train_and_predict(config, tmp_path)
    samples = [r for r in rows(run / "test_results" / "samples.csv") if r["site"] == "site1"]
    summary = [r for r in rows(run / "test_results" / "summary.csv") if r["site"] == "site1" and r["label"] != "mean"]
    model = samples[-1]["model"]
    samples = [r for r in samples if r["model"] == model]
    summary = {r["label"]: float(r["threshold_val"]) for r in summary if r["model"] == model}
    images = [p for p in (tmp_path / "data").rglob("*") if p.suffix in (".png", ".jpg") and "site1" in p.parts]
    by_file = {next(p for p in images if p.with_suffix("").as_posix().endswith(r["image_id"])): r for r in samples}  # ids: the release's paths
    assert infer_main(["-c", str(config), "-n", "run", *exps, "--stage", model, "--site", "site1", *map(str, by_file),
                       "-o", str(tmp_path / "out"), "--no-progress"]) == 0
    found = rows(tmp_path / "out" / "predictions.csv")
    labels = list(summary)
    assert list(found[0]) == ["input", "model", *(f"p_{l}" for l in labels), *(f"positive_{l}" for l in labels)]
    for row in found:
        reference = by_file[Path(row["input"])]
        for label in labels:
            assert float(row[f"p_{label}"]) == pytest.approx(float(reference[f"p_{label}"]), abs=1e-5)
            assert int(row[f"positive_{label}"]) == int(float(row[f"p_{label}"]) >= summary[label])
