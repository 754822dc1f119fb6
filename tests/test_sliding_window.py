"""Sliding-window inference for validation, testing and prediction, and its config section."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from experiments import tiny_config
from monai.inferers import sliding_window_inference
from torch import nn

from siteflow.config import ConfigError, InferenceConfig, TrainConfig, load_config
from siteflow.config.inference import window_of_patches
from siteflow.core.atomic import load_weights
from siteflow.datasets.pooling import build_dataset
from siteflow.engine.runner import ExperimentRun
from siteflow.losses import DiceCELoss
from siteflow.metrics import PooledOverlap
from siteflow.tasks import SegmentationLearner, build_task
from siteflow.tasks.segmentation.inference import Inference


def pointwise_net() -> nn.Module:
    """A fully convolutional net of 1x1 convolutions: each pixel's logits depend on that pixel
    alone, so any window that holds a pixel gives it the same logits."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 1), nn.ReLU(), nn.Conv2d(6, 2, 1)).eval()


def neighbourhood_net() -> nn.Module:
    """A 3x3 convolution (zero padding): a pixel on a window's border sees the window's padding
    where the whole image has a neighbour."""
    torch.manual_seed(0)
    return nn.Conv2d(3, 2, 3, padding=1).eval()


class ShapeLog(nn.Module):
    """Runs ``net`` and records the shape of every input it is given."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(images.shape))
        return self.net(images)


IMAGES = torch.randn(2, 3, 23, 37, generator=torch.Generator().manual_seed(1))


@torch.no_grad()
@pytest.mark.parametrize("blend", ["gaussian", "constant"])
@pytest.mark.parametrize("overlap", [0.0, 0.5, 0.75])
def test_a_pointwise_net_gives_the_whole_image_logits_whatever_the_windows(blend, overlap):
    net = pointwise_net()
    windows = Inference(InferenceConfig(mode="sliding_window", roi_size=(8, 16), overlap=overlap, blend=blend, sw_batch_size=3))
    torch.testing.assert_close(windows(net, IMAGES), net(IMAGES), rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_a_window_larger_than_the_image_pads_and_crops_back():
    net = pointwise_net()
    windows = Inference(InferenceConfig(mode="sliding_window", roi_size=(32, 48)))
    torch.testing.assert_close(windows(net, IMAGES), net(IMAGES), rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_exact_constant_tiling_of_a_3x3_net_agrees_inside_the_windows_and_differs_on_their_borders():
    net = neighbourhood_net()
    images = IMAGES[:, :, :16, :32]  # tiled exactly by 2 x 4 windows of 8 x 8
    windows = Inference(InferenceConfig(mode="sliding_window", roi_size=(8, 8), overlap=0.0, blend="constant"))
    tiled, whole = windows(net, images), net(images)
    border = torch.zeros(16, 32, dtype=torch.bool)
    border[[7, 8], :] = True  # the rows and columns where two windows meet
    border[:, [7, 8, 15, 16, 23, 24]] = True
    torch.testing.assert_close(tiled[..., ~border], whole[..., ~border], rtol=1e-5, atol=1e-5)
    assert (tiled[..., border] - whole[..., border]).abs().amax() > 1e-3


@torch.no_grad()
def test_whole_mode_runs_the_model_once_on_the_whole_image():
    model = ShapeLog(neighbourhood_net())
    Inference(InferenceConfig(mode="whole"))(model, IMAGES)
    assert model.shapes == [(2, 3, 23, 37)]


def learner_for(net: nn.Module, inference: InferenceConfig) -> SegmentationLearner:
    return SegmentationLearner(
        net, DiceCELoss(), train=TrainConfig(inference=inference), class_names=("background", "vessel"), test_site_names=("a",)
    )


@torch.no_grad()
def test_the_learner_runs_windows_of_the_configured_size_in_batches_of_sw_batch_size():
    model = ShapeLog(pointwise_net())
    learner = learner_for(model, InferenceConfig(roi_size=(8, 16), overlap=0.5, sw_batch_size=4))  # mode auto
    batch = {"image": IMAGES[:1], "label": torch.zeros(1, 23, 37, dtype=torch.long), "id": ["x"]}
    outputs = learner.evaluation_outputs(batch)
    # windows every 4 rows and 8 columns: starts 0, 4, 8, 12, 15 x 0, 8, 16, 21 -> 20 windows
    assert [shape[0] for shape in model.shapes] == [4] * 5
    assert {shape[1:] for shape in model.shapes} == {(3, 8, 16)}
    torch.testing.assert_close(outputs, model.net(IMAGES[:1]), rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_auto_without_a_window_runs_the_whole_image():
    model = ShapeLog(pointwise_net())
    learner_for(model, InferenceConfig()).evaluation_outputs({"image": IMAGES, "label": torch.zeros(2, 23, 37, dtype=torch.long)})
    assert model.shapes == [(2, 3, 23, 37)]


def test_a_sliding_window_without_a_roi_size_is_refused():
    with pytest.raises(ValueError, match="sliding_window needs a roi_size"):
        Inference(InferenceConfig(mode="sliding_window"))


def test_the_window_defaults_to_the_training_patch_size():
    assert window_of_patches(InferenceConfig(), [48, 64], "t").roi_size == (48, 64)
    assert window_of_patches(InferenceConfig(roi_size=(32, 32)), [48, 64], "t").roi_size == (32, 32)
    assert window_of_patches(InferenceConfig(mode="whole"), [48, 64], "t").roi_size is None
    assert window_of_patches(InferenceConfig(), None, "t").roi_size is None
    with pytest.raises(ConfigError, match=r"^t\.roi_size: has 3 axes, but the data trains on patches of \[48, 64\]"):
        window_of_patches(InferenceConfig(roi_size=(8, 8, 8)), [48, 64], "t")


def test_a_loaded_config_carries_its_inference_section_to_every_site(tmp_path):
    inference = {"mode": "sliding_window", "roi_size": [16, 16], "overlap": 0.25, "blend": "constant", "sw_batch_size": 2}
    config = load_config(
        tiny_config(
            tmp_path,
            common={"train": {"inference": inference}},
            current_tasks={"task_ids": [1, 2], "task_confs": {2: {"train": {"inference": {"overlap": 0.75}}}}},
        )
    )
    first, second = (site_run.train.inference for site_run in config.site_runs)
    assert first == InferenceConfig("sliding_window", (16, 16), 0.25, "constant", 2)
    assert second == InferenceConfig("sliding_window", (16, 16), 0.75, "constant", 2)
    assert config.processed()["tasks"][0]["train"]["inference"]["roi_size"] == (16, 16)


@pytest.mark.parametrize(
    ("inference", "key_path", "message"),
    [
        ({"overlapp": 0.5}, "common.train.inference.overlapp", "unknown key; did you mean 'overlap'?"),
        ({"overlap": 1.0}, "common.train.inference.overlap", "must be in [0, 1), got 1.0"),
        ({"overlap": -0.1}, "common.train.inference.overlap", "must be in [0, 1), got -0.1"),
        ({"overlap": "half"}, "common.train.inference.overlap", "expected a number, got 'half'"),
        ({"blend": "gauss"}, "common.train.inference.blend", "expected 'gaussian' or 'constant', got 'gauss'; did you mean 'gaussian'?"),
        ({"mode": "sliding"}, "common.train.inference.mode", "did you mean 'sliding_window'?"),
        ({"sw_batch_size": 0}, "common.train.inference.sw_batch_size", "must be at least 1, got 0"),
        ({"roi_size": [0, 8]}, "common.train.inference.roi_size", "sizes must be at least 1, got [0, 8]"),
        ({"roi_size": [8]}, "common.train.inference.roi_size", "must give 2 or 3 sizes (one per spatial axis), got [8]"),
        ({"roi_size": [8, 8], "mode": "whole"}, "common.train.inference.roi_size", "mode 'whole' runs no window"),
        ({"mode": "sliding_window"}, "common.train.inference.mode", "sliding_window needs a window: set roi_size"),
        ([0.5], "common.train.inference", "expected a mapping, got [0.5]"),
    ],
)
def test_a_bad_inference_section_is_one_error_naming_its_key(tmp_path, inference, key_path, message):
    with pytest.raises(ConfigError) as info:
        load_config(tiny_config(tmp_path, common={"train": {"inference": inference}}))
    assert info.value.key_path == key_path
    assert message in info.value.problem
    assert info.value.source == str(Path(tmp_path / "sequential.yaml"))


def test_a_site_override_is_reported_at_the_site(tmp_path):
    confs = {2: {"train": {"inference": {"mode": "sliding_window"}}}}
    with pytest.raises(ConfigError) as info:
        load_config(tiny_config(tmp_path, current_tasks={"task_ids": [1, 2], "task_confs": copy.deepcopy(confs)}))
    assert info.value.key_path == "current_tasks.task_confs.2.train.inference.mode"


@pytest.mark.parametrize(
    "reading",
    [{"patch_size": [16, 16]}, {"img_size": [32, 32]}],
    ids=["native-patches-sliding-window", "resized-whole-images"],
)
def test_a_run_tests_every_site_at_native_resolution_as_recomputed_by_hand(tmp_path, reading):
    vessels = {
        "name": "synthetic_vessels",
        "kwargs": {
            "root_path": str(tmp_path / "data"), "train_per_site": 4, "test_per_site": 2, "native_size": [40, 48],
            "val_fraction": 0.25, "fov_ignore_index": 255, **reading,
        },
    }
    config = load_config(
        tiny_config(
            tmp_path, "local", sites=1, dataset=vessels, all_tasks_datasets=[{"task_id": 1, "task_name": "DRIVE", "kwargs": {"folder": "DRIVE"}}],
            common={"train": {"loss": {"name": "dice_ce", "kwargs": {"ignore_index": 255}}}},
        )
    )
    inference = config.site_runs[0].train.inference
    assert inference.roi_size == (tuple(reading["patch_size"]) if "patch_size" in reading else None)
    ExperimentRun(config, tmp_path / "run").execute()
    recorded = json.loads((tmp_path / "run" / "results" / "progress.json").read_text())["stages"][0]["values"]["DRIVE"]

    task = build_task(config)
    model = task.build_model().eval()
    model.load_state_dict(load_weights(tmp_path / "run" / "checkpoints" / "task_1" / "final.safetensors"))
    metric = PooledOverlap(2, ignore_index=255, average="none")
    with torch.no_grad():
        for item in build_dataset(config.sites[0], "test"):
            image, label = item["image"][None], item["label"][None]
            native = label.shape[1:]
            assert (label == 255).any()  # the FOV's outside is left out
            if inference.roi_size is not None:
                assert image.shape[2:] == native
                logits = sliding_window_inference(image, (16, 16), 4, model, overlap=0.5, mode="gaussian")
            else:
                assert image.shape[2:] == (32, 32) != native
                logits = F.interpolate(model(image), size=native, mode="bilinear", align_corners=False)
            metric.update(logits, label)
    expected = metric.compute()
    for name in ("dice", "iou", "sensitivity", "specificity"):
        assert recorded[name] == pytest.approx(expected[name].item(), abs=1e-6), name
