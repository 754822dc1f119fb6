"""siteflow-infer and siteflow-export on models trained here (tiny real runs): the masks that
siteflow-infer writes for a test split are those that predict_test.py scored, whether the
model comes from the run folder, its hand-over file or its export; a local run's sites each
have their own model, chosen with --site."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from experiments import tiny_config
from siteflow.cli import export_main, infer_main, predict_main, train_main

pytestmark = pytest.mark.slow


def saved(sites: int = 2) -> dict:
    return {"task_confs": {i: {"checkpoint": {"save": f"task_{i}"}} for i in range(1, sites + 1)}}


def site_test_images(data: Path, site: int) -> Path:
    (folder,) = [p for p in data.glob(f"*/Domain{site}/test/image")]
    return folder


def scored_masks(run: Path, model: str, site: str) -> dict[str, np.ndarray]:
    """predict_test.py's predicted masks (its -s NIfTI files) of ``model`` on ``site``."""
    folder = run / "test_results" / "nifti" / model / site
    return {p.name.removesuffix("_pred.nii.gz"): sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in folder.glob("*_pred.nii.gz")}


def written_masks(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: np.asarray(Image.open(p)) for p in folder.glob("*.png")}


def test_infer_gives_the_masks_predict_test_scored_from_the_run_its_handover_and_its_export(tmp_path, capsys):
    config = tiny_config(tmp_path, "sequential", current_tasks=saved())
    exps = ["--exps-root", str(tmp_path / "exps")]
    assert train_main(["-c", str(config), "-n", "run", *exps]) == 0
    assert predict_main(["-c", str(config), "-n", "run", "-s", *exps]) == 0
    run = tmp_path / "exps" / "sequential" / "run"
    for site in (1, 2):
        expected = scored_masks(run, "site2", f"site{site}")
        assert len(expected) == 3
        images = site_test_images(tmp_path / "data", site)
        out = tmp_path / f"run_site{site}"
        assert infer_main(["-c", str(config), "-n", "run", *exps, str(images), "-o", str(out), "--no-progress"]) == 0
        mine = written_masks(out)
        assert mine.keys() == expected.keys()
        for image_id, mask in expected.items():
            np.testing.assert_array_equal(mine[image_id], mask)
    images = site_test_images(tmp_path / "data", 1)
    expected = written_masks(tmp_path / "run_site1")
    handover = run / "checkpoints" / "task_2" / "handover.safetensors"
    assert infer_main(["-c", str(config), "--handover", str(handover), str(images), "-o", str(tmp_path / "handover"), "--no-progress"]) == 0
    assert infer_main(["-c", str(config), "-n", "run", *exps, "--stage", "site1", str(images), "-o", str(tmp_path / "first"), "--no-progress"]) == 0
    assert export_main(["-c", str(config), "-n", "run", *exps, "-o", str(tmp_path / "export")]) == 0
    assert infer_main(["--model", str(tmp_path / "export"), str(images), "-o", str(tmp_path / "exported"), "--no-progress"]) == 0
    for kind in ("handover", "exported"):
        found = written_masks(tmp_path / kind)
        for image_id, mask in expected.items():
            np.testing.assert_array_equal(found[image_id], mask, err_msg=kind)
    first = written_masks(tmp_path / "first")
    assert any(not np.array_equal(first[i], expected[i]) for i in expected)  # another stage, another model
    card = json.loads((tmp_path / "export" / "model_card.json").read_text())
    progress = json.loads((run / "results" / "progress.json").read_text())
    assert card["provenance"]["test_metrics"] == progress["stages"][-1]["values"]
    assert card["provenance"]["sites"] == [{"site": "site1", "samples": 4}, {"site": "site2", "samples": 4}]
    assert card["provenance"]["seed"] == 1 and card["provenance"]["strategy"] == "sequential"
    assert "site_matrix" in card["provenance"] and "dice" in card["provenance"]["site_matrix"]
    with pytest.raises(SystemExit):
        infer_main(["-c", str(config), "-n", "run", *exps, "--stage", "nope", str(images), "-o", str(tmp_path / "x")])
    assert "--stage: no finished stage named 'nope'" in capsys.readouterr().err


def test_a_local_runs_sites_each_have_their_own_model(tmp_path, capsys):
    config = tiny_config(tmp_path, "local", current_tasks=saved())
    exps = ["--exps-root", str(tmp_path / "exps")]
    assert train_main(["-c", str(config), "-n", "run", *exps]) == 0
    assert predict_main(["-c", str(config), "-n", "run", "-s", *exps]) == 0
    run = tmp_path / "exps" / "local" / "run"
    images = site_test_images(tmp_path / "data", 2)
    with pytest.raises(SystemExit):
        infer_main(["-c", str(config), "-n", "run", *exps, str(images), "-o", str(tmp_path / "x")])
    assert "is a local run: each site trained its own model (site1, site2): choose one with --site" in capsys.readouterr().err
    stages = {row["trained_site"]: row["stage"] for row in json.loads((run / "results" / "progress.json").read_text())["stages"]}
    for site in ("site1", "site2"):
        out = tmp_path / site
        assert infer_main(["-c", str(config), "-n", "run", *exps, "--site", site, str(images), "-o", str(out), "--no-progress"]) == 0
        for image_id, mask in scored_masks(run, stages[site], "site2").items():  # predict_test.py scored every stage on site2
            np.testing.assert_array_equal(written_masks(out)[image_id], mask)
    assert any(not np.array_equal(a, b) for a, b in zip(written_masks(tmp_path / "site1").values(), written_masks(tmp_path / "site2").values()))
