"""Replay quality: the solver's Dice on replays, diversity, label-map statistics and the grid,
by hand on small tensors, and written by a relay run into its results."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from PIL import Image
from torch import nn

from experiments import tiny_config
from siteflow.config import load_config
from siteflow.engine.runner import ExperimentRun
from siteflow.handover import read_handover
from siteflow.strategies.base import SiteInput
from siteflow.strategies.relay.replay_quality import (
    foreground_fraction,
    mean_components,
    mean_pairwise_distance,
    measure_replay,
    save_replay_grid,
    solver_dice,
)


class ThresholdSolver(nn.Module):
    """A fixed solver for hand computation: class 1 where the image's first channel is > 0."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(images[:, :1]), images[:, :1]], dim=1)


def test_solver_dice_is_pooled_over_pixels_by_hand():
    # sample 1: predicted {0, 1}, true {1, 2}; sample 2: predicted {3}, true {3}: TP 2, FP 1, FN 1
    images = torch.tensor([[[1.0, 1.0, -1.0, -1.0]], [[-1.0, -1.0, -1.0, 1.0]]])[:, None]  # (2, 1, 1, 4)
    labels = torch.tensor([[[0, 1, 1, 0]], [[0, 0, 0, 1]]])
    assert solver_dice(ThresholdSolver(), (images, labels), 2) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))


def test_solver_dice_leaves_the_solver_in_its_mode():
    solver = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2)).train()
    images, labels = torch.randn(3, 1, 4, 4), torch.randint(0, 2, (3, 4, 4))
    running = solver[1].running_mean.clone()
    solver_dice(solver, (images, labels), 2)
    assert solver.training and torch.equal(solver[1].running_mean, running)  # evaluated, not trained


def test_diversity_is_the_mean_pairwise_rms_distance():
    constant = torch.tensor([0.0, 1.0, 3.0])[:, None, None, None].expand(3, 2, 4, 4)
    assert mean_pairwise_distance(constant) == pytest.approx((1 + 3 + 2) / 3)  # pairs (0,1), (0,3), (1,3)
    identical = torch.randn(1, 3, 8, 8).expand(5, 3, 8, 8)
    assert mean_pairwise_distance(identical) == 0.0
    with pytest.raises(ValueError, match="at least 2 images"):
        mean_pairwise_distance(torch.zeros(1, 1, 4, 4))


def test_label_statistics_by_hand():
    labels = torch.tensor(
        [
            [[1, 0, 0, 0], [0, 1, 0, 2], [0, 0, 0, 2], [9, 9, 0, 0]],  # a diagonal pair (one 8-connected component) and a bar
            [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]],
        ]
    )
    assert mean_components(labels, ignore_index=9) == pytest.approx((2 + 1) / 2)
    assert foreground_fraction(labels, ignore_index=9) == pytest.approx(5 / 32)  # ignored pixels are background
    assert foreground_fraction(labels) == pytest.approx(7 / 32)


def test_a_generator_that_copies_real_pairs_scores_as_the_real_pairs():
    torch.manual_seed(0)
    images = torch.randn(6, 1, 8, 8)
    labels = (torch.randn(6, 8, 8) > 0.3).long()
    quality = measure_replay("a", ThresholdSolver(), (images, labels), (images.clone(), labels.clone()), num_classes=2)
    assert quality.solver_dice_replay == quality.solver_dice_real == solver_dice(ThresholdSolver(), (images, labels), 2)
    assert quality.diversity_replay == quality.diversity_real > 0
    assert quality.foreground_replay == quality.foreground_real
    assert quality.components_replay == quality.components_real
    assert quality.samples == 6


def test_collapsed_replays_show_zero_diversity_and_no_real_values_without_real_data():
    collapsed = (torch.randn(1, 3, 8, 8).expand(4, 3, 8, 8), torch.zeros(4, 8, 8, dtype=torch.long))
    quality = measure_replay("b", ThresholdSolver(), collapsed, None, num_classes=2)
    assert quality.diversity_replay == 0.0
    assert quality.foreground_replay == 0.0 and quality.components_replay == 0.0
    assert quality.solver_dice_real is quality.diversity_real is quality.components_real is None
    assert "real" not in quality.summary() and "diversity 0.000" in quality.summary()


def test_the_grid_shows_real_and_replayed_rows(tmp_path):
    pairs = (torch.rand(4, 3, 16, 16) * 2 - 1, torch.randint(0, 3, (4, 16, 16)))
    with_real, without_real = tmp_path / "both.png", tmp_path / "replay_only.png"
    save_replay_grid(with_real, [("a", pairs, pairs)], 3, title="t")
    save_replay_grid(without_real, [("a", pairs, None)], 3, title="t")
    both, replay_only = Image.open(with_real), Image.open(without_real)
    assert both.format == "PNG" and both.height > 1.8 * replay_only.height  # 4 rows against 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["both.png", "replay_only.png"]  # no temporary left


# 32x32 images, training patches of 16x16 (so replays of 16x16), augmented
COMMON = {
    "strategy": {"kwargs": {"label_generator_channels": 16, "image_generator_channels": 4, "discriminator_channels": 4, "quality_samples": 3}},
    "dataset": {"kwargs": {"patch_size": [16, 16], "augmentation": "light"}},
    "train": {"epochs": 2},
}


@pytest.mark.slow
def test_a_relay_run_measures_every_earlier_site_before_every_site(tmp_path, caplog):
    config = load_config(tiny_config(tmp_path, "relay", sites=3, common=COMMON))
    runner = ExperimentRun(config, tmp_path / "run")
    with caplog.at_level(logging.INFO, logger="siteflow.strategies.relay.strategy"):
        runner.execute()
    results = runner.folder.results_dir
    measured = json.loads((results / "replay_quality.json").read_text())
    assert {stage: sorted(sites) for stage, sites in measured.items()} == {"site2": ["site1"], "site3": ["site1", "site2"]}
    for sites in measured.values():
        for quality in sites.values():
            assert quality["samples"] == 3
            assert 0 <= quality["solver_dice_replay"] <= 1 and 0 <= quality["solver_dice_real"] <= 1
            assert quality["diversity_replay"] >= 0 and quality["diversity_real"] > 0
    assert Image.open(results / "replay_site2.png").format == "PNG" and (results / "replay_site3.png").is_file()
    assert sum("stage site3: replay of site" in record.getMessage() for record in caplog.records) == 2

    # seeded by the run's seed and the stage: measured again from the same hand-over, the same numbers
    (results / "replay_quality.json").write_text(json.dumps({"site2": measured["site2"]}))
    weights, manifest = read_handover(runner.folder.checkpoints / "task_2" / "handover.safetensors")
    received = SiteInput(weights, manifest.sites)
    again = runner.strategy.measure_replays(runner, "site3", config.site_runs[2], received)
    assert {q.site: q.solver_dice_replay for q in again.values()} == {s: v["solver_dice_replay"] for s, v in measured["site3"].items()}
    assert {q.site: q.diversity_replay for q in again.values()} == {s: v["diversity_replay"] for s, v in measured["site3"].items()}
    assert runner.strategy.measure_replays(runner, "site3", config.site_runs[2], received) == again  # measured before: read back


def test_replays_are_augmented_as_the_sites_training_images(tmp_path):
    config = load_config(tiny_config(tmp_path, "relay", sites=2, common=COMMON))
    runner = ExperimentRun(config, tmp_path / "run")
    augment = runner.strategy.replay_augmentation(config.site_runs[1])
    network = runner.strategy.build_network(runner.task)
    assert network.image_generator(torch.zeros(1, 64), torch.zeros(1, dtype=torch.long), torch.zeros(1, 3, 16, 16), torch.zeros(1, 8, 16, 16)).shape[-1] == 16
    torch.manual_seed(0)
    images, labels = torch.rand(8, 3, 16, 16) * 2 - 1, torch.randint(0, 3, (8, 16, 16))
    augmented, augmented_labels = augment(images, labels)
    assert augmented.shape == images.shape and augmented_labels.shape == labels.shape
    assert not torch.allclose(augmented, images)
    (tmp_path / "plain").mkdir()
    plain = load_config(tiny_config(tmp_path / "plain", "relay", sites=2))  # no augmentation
    assert runner.strategy.replay_augmentation(plain.site_runs[1]) is None
