"""MONAI's DenseNet-121 and EfficientNet-B0 as classifiers of the classification task: built
from a config by the task, one real Lightning training step on synthetic lesion images, their
options in the config reference, and images too small for them refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from siteflow.config import load_config
from siteflow.config.reference import component_options, config_reference
from siteflow.core.registry import MODELS
from siteflow.tasks.base import build_task
from tests.experiments import tiny_config

OPTIONS = {"densenet121": {"spatial_dims", "dropout"}, "efficientnet_b0": {"spatial_dims"}}


def lesion_config(folder: Path, model: dict, img_size: int = 32) -> Path:
    """Two synthetic lesion sites (8 training images each, four classes) at ``img_size``."""
    dataset = {"name": "synthetic_classes", "kwargs": {"root_path": str(folder / "data"), "train_per_site": 8, "test_per_site": 4,
                                                       "native_size": [img_size, img_size], "img_size": [img_size, img_size],
                                                       "val_fraction": 0.25}}
    sites = [{"task_id": i, "task_name": f"site{i}", "kwargs": {"folder": f"site{i}"}} for i in (1, 2)]
    return tiny_config(folder, "local", dataset=dataset, model=model, all_tasks_datasets=sites,
                       common={"train": {"loss": {"name": "ce", "kwargs": {"class_weights": "balanced"}}}})


@pytest.mark.parametrize("name", list(OPTIONS))
def test_a_monai_classifier_trains_one_step_and_its_options_are_documented(tmp_path: Path, name: str) -> None:
    model = {"name": name, "kwargs": {"dropout": 0.1} if name == "densenet121" else {}}
    config = load_config(lesion_config(tmp_path, model))
    task = build_task(config)
    (first, _) = config.site_runs
    network = task.build_model()
    assert {n.split(".")[0] for n, _ in network.named_parameters()} == {"trunk", "head"}  # FedPer's personal_layers: [head]
    assert network.head.out_features == len(task.class_names) == 4
    before = {k: v.clone() for k, v in network.state_dict().items()}
    learner = task.learner(network, task.build_loss(first.train, [first.site]), first.train)
    images = DataLoader(task.dataset([first.site], "train"), batch_size=4, shuffle=False)
    trainer = pl.Trainer(max_steps=1, limit_val_batches=0, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(learner, images)
    assert trainer.global_step == 1
    after = network.state_dict()
    for part in ("trunk", "head"):
        changed = [k for k in before if k.startswith(f"{part}.") and before[k].is_floating_point() and not torch.equal(before[k], after[k])]
        assert changed, f"{part} did not train"
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    network.eval()
    logits = network(next(iter(images))["image"])
    assert logits.shape == (4, 4) and torch.isfinite(logits).all()

    rows = component_options(MODELS.get(name), ("in_channels", "num_classes"))
    assert {row[0].strip("`") for row in rows} == OPTIONS[name]
    assert all(row[3] for row in rows), f"{name}: an option without a meaning"
    assert f"### `{name}`" in config_reference()


@pytest.mark.parametrize(("name", "message"), [
    ("densenet121", r"densenet121 needs images of at least 32 pixels a side \(five halvings\), got \(28, 28\)"),
    ("efficientnet_b0", r"efficientnet_b0 needs image sides that are multiples of 32, got \(28, 28\)"),
])
def test_images_too_small_for_a_monai_classifier_are_refused_by_name(name: str, message: str) -> None:
    network = MODELS.get(name)(in_channels=3, num_classes=4)
    with pytest.raises(ValueError, match=message):
        network(torch.zeros(1, 3, 28, 28))
