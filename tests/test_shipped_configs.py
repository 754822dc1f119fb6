"""The shipped real-data configs are what a study would run: pointed at synthetic sites written
in the very layouts of the real releases, each one validates as shipped (only the data paths,
the patch size and the budget scaled down) and a federated one trains on patches and tests by
sliding windows at every image's native resolution."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from siteflow.config import PACKAGED_CONFIGS, Component, SiteConfig, deep_merge, load_config
from siteflow.datasets.pooling import build_dataset
from siteflow.engine.runner import ExperimentRun

PATCH = [64, 64]  # the synthetic images are about 100 pixels wide
CONFIGS = [(family, path.stem) for family in ("vessels", "fundus") for path in sorted((PACKAGED_CONFIGS / family).glob("*.yaml"))]


def synthetic_sites(data: Path, family: str) -> dict[str, Path]:
    """The root folder of each synthetic site in its real release's layout (written on first
    use), by the site name of the shipped config."""
    if family == "vessels":
        return {
            name: build_dataset(SiteConfig(1, name, Component("synthetic_vessels", {"root_path": str(data), "folder": name})), "test").root_path
            for name in ("DRIVE", "STARE", "CHASE_DB1")
        }
    site = SiteConfig(1, "Domain1", Component("synthetic_fundus", {"root_path": str(data), "num_sites": 4, "folder": "Domain1"}))
    root = build_dataset(site, "test").root_path
    for part in root.glob("Domain*/*"):  # DoFE's disc-centred crops: here the whole synthetic images
        (part / "ROIs").symlink_to(".")
    return {f"Domain{i}": root for i in range(1, 5)}


def scaled_config(tmp_path: Path, family: str, name: str) -> Path:
    """The shipped config ``family/name`` with its data paths pointed at synthetic sites and
    its budget made tiny; every other setting stays as shipped."""
    raw = yaml.safe_load((PACKAGED_CONFIGS / family / f"{name}.yaml").read_text())
    roots = synthetic_sites(tmp_path / "data", family)
    for site in raw["all_tasks_datasets"]:
        site.setdefault("kwargs", {})["root_path"] = str(roots[site["task_name"]])
    if family == "fundus":
        raw["common"]["dataset"]["kwargs"]["root_path"] = str(roots["Domain1"])
        raw["common"]["dataset"]["kwargs"]["img_size"] = [64, 64]
    tiny = {
        "num_workers": 0,
        "dataset": {"kwargs": {"patch_size": PATCH, "num_replica": 1}},
        "model": {"kwargs": {"base_channels": 4}},
        "train": {"epochs": 1, "batch_size": 4, "precision": "32-true", "val_every_n_epochs": 1},
    }
    raw["common"] = deep_merge(raw["common"], tiny)
    path = tmp_path / f"{family}_{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(("family", "name"), CONFIGS)
@pytest.mark.slow
def test_a_shipped_real_data_config_validates_on_its_releases_layout(tmp_path, family, name):
    config = load_config(scaled_config(tmp_path, family, name))
    shipped = yaml.safe_load((PACKAGED_CONFIGS / family / f"{name}.yaml").read_text())["common"]
    assert shipped["dataset"]["kwargs"]["augmentation"] == "default" and shipped["dataset"]["kwargs"]["patch_size"] == [256, 256]
    for site_run in config.site_runs:
        inference = site_run.train.inference
        assert (inference.mode, inference.roi_size, inference.blend) == ("sliding_window", tuple(PATCH), "gaussian")


@pytest.mark.slow
def test_the_shipped_vessel_fedbn_config_trains_on_patches_and_tests_at_native_resolution(tmp_path):
    path = scaled_config(tmp_path, "vessels", "fedbn")
    raw = yaml.safe_load(path.read_text())
    raw["common"]["strategy"]["kwargs"].update(rounds=1, local_epochs=1)
    path.write_text(yaml.safe_dump(raw))
    run = ExperimentRun(load_config(path), tmp_path / "run")
    summary = run.execute()
    (row,) = run.results
    assert set(row.values) == {"DRIVE", "STARE", "CHASE_DB1"}
    for values in row.values.values():
        assert {"dice", "dice_sample", "iou", "sensitivity", "specificity"} <= set(values)
        assert 0.0 <= values["dice"] <= 1.0
    assert summary["metrics"][0] == "dice"
