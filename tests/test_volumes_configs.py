"""The shipped real-data 3D configs (``prostate/``) are what a study would run: pointed at
synthetic volumes written in the layouts their releases use (the six-site prostate collection
as ``images/`` + ``labels/`` folder pairs, Decathlon Task05 as a task folder with a file per
channel), each validates as shipped (only the data paths, the patch size and the budget scaled
down), and every site's data is read, split and preprocessed as the config says."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from siteflow.config import PACKAGED_CONFIGS, deep_merge, load_config
from siteflow.datasets.pooling import build_dataset, check_sites
from siteflow.datasets.synthetic.volumes import generate_volume_sites
from siteflow.engine.runner import ExperimentRun

PATCH = [8, 32, 32]  # the synthetic volumes are about 14 to 26 slices of 45 to 66 mm
STUDY = ["local", "joint", "sequential", "fedavg", "fedbn"]
CONFIGS = sorted(path.stem for path in (PACKAGED_CONFIGS / "prostate").glob("*.yaml"))


SITES = ["RUNMC", "BMC", "I2CVB", "UCL", "BIDMC", "HK"]


def six_sites(data: Path) -> dict[str, Path]:
    """The six prostate sites as ``<site>/train/{images,labels}`` folder pairs: the synthetic
    study's training cases, the organ (with its core) as the prostate, label 1; no ``test/``:
    the config carves the test split."""
    generate_volume_sites(data / "study", num_sites=6, train_per_site=4, test_per_site=1)
    roots = {}
    for index, name in enumerate(SITES, start=1):
        source, train = data / "study" / f"Site{index}", data / name / "train"
        (train / "labels").mkdir(parents=True)
        (train / "images").symlink_to(source / "imagesTr")
        for label in (source / "labelsTr").iterdir():
            image = sitk.ReadImage(str(label))
            binary = sitk.GetImageFromArray((sitk.GetArrayFromImage(image) > 0).astype(np.uint8))
            binary.CopyInformation(image)
            sitk.WriteImage(binary, str(train / "labels" / label.name))
        roots[name] = data / name
    return roots


def task05(data: Path) -> Path:
    """A Task05-like folder in nnU-Net v2's raw layout: nine labelled cases of two channels
    (``<id>_0000``, ``<id>_0001``), labels 0, 1 (PZ), 2 (TZ), and unlabelled imagesTs."""
    generate_volume_sites(data / "study", num_sites=1, train_per_site=9, test_per_site=1)
    source = data / "study" / "Site1"
    root = data / "Task05_Prostate"
    for kind in ("imagesTr", "labelsTr", "imagesTs"):
        (root / kind).mkdir(parents=True)
    for image in sorted((source / "imagesTr").iterdir()):
        case = image.name.removesuffix(".nii.gz")
        for channel in ("0000", "0001"):
            (root / "imagesTr" / f"{case}_{channel}.nii.gz").symlink_to(image)
        (root / "labelsTr" / image.name).symlink_to(source / "labelsTr" / image.name)
    (root / "imagesTs" / "case_009_0000.nii.gz").symlink_to(source / "imagesTs" / "case_009.nii.gz")
    labels = {"background": 0, "PZ": 1, "TZ": 2}
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T2", "1": "ADC"}, "labels": labels}))
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Both releases' layouts, written once for the module."""
    root = tmp_path_factory.mktemp("prostate")
    six_sites(root / "six")
    task05(root / "msd")
    return root


def scaled_config(tmp_path: Path, data: Path, name: str) -> Path:
    """The shipped config ``prostate/<name>`` pointed at the synthetic ``data`` in its
    release's layout, with a small patch and budget; every other setting stays as shipped."""
    raw = yaml.safe_load((PACKAGED_CONFIGS / "prostate" / f"{name}.yaml").read_text())
    if name in STUDY:
        for site in raw["all_tasks_datasets"]:
            site["kwargs"]["root_path"] = str(data / "six" / site["task_name"])
    else:
        raw["common"]["dataset"]["kwargs"]["root_path"] = str(data / "msd" / "Task05_Prostate")
    tiny = {
        "num_workers": 0,
        "dataset": {"kwargs": {"patch_size": PATCH, "num_replica": 1, "cache": "memory"}},
        "model": {"kwargs": {"base_channels": 4, "depth": 2}},
        "train": {"epochs": 1, "batch_size": 2, "precision": "32-true", "val_every_n_epochs": 1},
    }
    raw["common"] = deep_merge(raw["common"], tiny)
    path = tmp_path / f"prostate_{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_prostate_family_is_the_study_and_task05():
    assert CONFIGS == sorted([*STUDY, "task05_fedavg"])


@pytest.mark.parametrize("name", CONFIGS)
def test_a_shipped_prostate_config_validates_on_its_releases_layout(tmp_path, data, name):
    shipped = yaml.safe_load((PACKAGED_CONFIGS / "prostate" / f"{name}.yaml").read_text())["common"]
    options = shipped["dataset"]["kwargs"]
    assert (options["normalisation"], options["orientation"], options["augmentation"], options["test_fraction"]) == ("mri", "RAS", "default", 0.2)
    assert shipped["model"]["kwargs"]["spatial_dims"] == 3 and shipped["model"]["kwargs"]["norm"] == "instance"
    config = load_config(scaled_config(tmp_path, data, name))
    assert len(config.sites) == (6 if name in STUDY else 3)
    for site_run in config.site_runs:
        inference = site_run.train.inference
        assert (inference.mode, inference.roi_size, inference.blend) == ("sliding_window", tuple(PATCH), "gaussian")


@pytest.mark.parametrize("name", ["fedavg", "task05_fedavg"])
def test_every_site_of_a_prostate_study_is_read_and_split_as_its_config_says(tmp_path, data, name):
    config = load_config(scaled_config(tmp_path, data, name))
    check_sites(config.sites)  # every split of every site read, preprocessed and checked
    held = []
    for site in config.sites:
        parts = {split: build_dataset(site, split).sample_ids for split in ("train", "val", "test")}
        assert all(parts.values()), (site.task_name, parts)
        assert not set(parts["test"]) & set(parts["train"] + parts["val"])
        held.append(sorted(parts["train"] + parts["val"] + parts["test"]))
    if name in STUDY:
        assert [site.task_name for site in config.sites] == SITES
        assert all(len(cases) == 4 for cases in held)  # each site splits all its own cases
    else:  # nine cases cut into three shards of three, no case at two sites
        assert [len(cases) for cases in held] == [3, 3, 3] and len({c for cases in held for c in cases}) == 9
        item = build_dataset(config.sites[0], "train")[0]
        assert item["image"].shape[0] == 2 and set(item["label"].unique().tolist()) <= {0, 1, 2}


@pytest.mark.slow
def test_the_task05_config_trains_on_patches_and_tests_by_sliding_windows(tmp_path, data):
    path = scaled_config(tmp_path, data, "task05_fedavg")
    raw = yaml.safe_load(path.read_text())
    raw["common"]["strategy"]["kwargs"].update(rounds=1, local_epochs=1)
    path.write_text(yaml.safe_dump(raw))
    run = ExperimentRun(load_config(path), tmp_path / "run")
    run.execute()
    (row,) = run.results
    assert set(row.values) == {"shard1", "shard2", "shard3"}
    for values in row.values.values():
        assert 0.0 <= values["dice"] <= 1.0
