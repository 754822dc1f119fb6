"""Replays weighted by their quality: weights from given qualities by hand, the options'
checks, a batch and a solver loss with weights by hand, and a short relay run on vessel sites
that writes and logs how much each replay counted."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from siteflow.config import TrainConfig, load_config
from siteflow.engine.runner import ExperimentRun
from siteflow.losses import DiceCELoss, distillation_loss
from siteflow.models import UNet
from siteflow.models.generators import ImageGenerator, LabelGenerator
from siteflow.strategies.relay import RelayLearner, RelayNetwork, RelayOptions, RelayPosition, RelayStrategy
from siteflow.strategies.relay.learner import Replay
from siteflow.strategies.relay.replay_quality import ReplayQuality
from siteflow.strategies.relay.replay_weights import AGREEMENT, RATIO, UNIFORM, UNJUDGED, replay_weights
from tests.experiments import tiny_config


def quality(site: str, replay: float, real: float | None) -> ReplayQuality:
    """A measured quality whose only numbers that matter are the solver's Dice values."""
    other = None if real is None else 0.0
    return ReplayQuality(site, 4, replay, real, 0.1, other, 0.1, other, 1.0, other)


def test_weights_come_from_the_measured_quality_by_hand():
    qualities = {
        0: quality("DRIVE", 0.55, 0.70),  # 0.55 / 0.70 = 0.786: (0.786 - 0.5) / (0.9 - 0.5) = 0.714
        1: quality("STARE", 0.26, 0.60),  # 0.433, below the floor: 0
        2: quality("CHASE_DB1", 0.80, None),  # a deployed site: the agreement 0.8 itself, (0.8 - 0.5) / 0.4 = 0.75
        3: quality("HRF", 0.75, 0.70),  # better than on real patches: quality capped at 1, weight 1
        4: quality("IOSTAR", 0.30, 0.0),  # the solver segments no real patch: quality 0
        5: quality("ARIA", 0.069, 0.049),  # ratio 1.4, but a solver at 0.049 on real patches: nothing to keep, no judge
    }
    names = {code: q.site for code, q in qualities.items()}
    weights = replay_weights(RelayOptions(replay_weighting="quality"), qualities, names)
    assert [w.code for w in weights] == [0, 1, 2, 3, 4, 5]
    assert [w.weight for w in weights] == pytest.approx([(0.55 / 0.70 - 0.5) / 0.4, 0.0, 0.75, 1.0, 0.0, 0.0])
    assert [w.quality for w in weights] == pytest.approx([0.55 / 0.70, 0.26 / 0.60, 0.8, 1.0, 0.0, 1.0])
    assert [w.measured_by for w in weights] == [RATIO, RATIO, AGREEMENT, RATIO, UNJUDGED, UNJUDGED]
    assert weights[0].summary() == f"DRIVE's replays count 0.71 (quality 0.786: {RATIO})"
    assert weights[5].summary() == f"ARIA's replays count 0.00 (quality 1.000: {UNJUDGED})"
    steep = replay_weights(RelayOptions(replay_weighting="quality", quality_floor=0.0, quality_full=0.5), qualities, names)
    assert [w.weight for w in steep] == pytest.approx([1.0, 0.26 / 0.60 / 0.5, 1.0, 1.0, 0.0, 1.0])  # floor 0: every solver judges
    uniform = replay_weights(RelayOptions(replay_weighting="uniform"), {}, names)
    assert [(w.weight, w.quality, w.measured_by) for w in uniform] == [(1.0, None, UNIFORM)] * 6


@pytest.mark.parametrize(
    "options, message",
    [
        ({"quality_floor": -0.1}, r"quality_floor must be in \[0, 1\] \(a replay quality\), got -0.1"),
        ({"quality_full": 1.5}, r"quality_full must be in \[0, 1\] \(a replay quality\), got 1.5"),
        ({"quality_floor": 0.9, "quality_full": 0.5, "replay_weighting": "quality"}, r"quality_floor \(0.9\) must be below quality_full \(0.5\).*no replay ever counts"),
        ({"quality_floor": 1.0, "quality_full": 1.0, "replay_weighting": "quality"}, r"quality_floor \(1.0\) must be below quality_full \(1.0\)"),
        ({"quality_samples": 0, "replay_weighting": "quality"}, r"quality_samples must be at least 2 with replay_weighting: 'quality'"),
        ({"replay_weighting": "dice"}, r"replay_weighting must be 'quality' or 'uniform', got 'dice'"),
    ],
)
def test_weighting_options_are_checked_naming_the_key(options, message):
    with pytest.raises(ValueError, match=message):
        RelayStrategy(**options)


def test_uniform_weighting_needs_no_measurement():
    assert RelayOptions(replay_weighting="uniform", quality_samples=0).replay_weighting == "uniform"


def third_site_learner(weights: dict[int, float], **options) -> tuple[RelayNetwork, RelayLearner]:
    """A randomly initialised relay network (seed 0) received by the third site (earlier
    codes 0 and 1), and its learner past the midpoint with the given replay weights."""
    torch.manual_seed(0)
    network = RelayNetwork(
        UNet(1, 2, base_channels=4, depth=2), LabelGenerator(2, 16, z_dim=4, channels=16), ImageGenerator(2, 1, 16, z_dim=4, channels=4)
    )
    position = RelayPosition(site_code=2, previous_codes=(0, 1), samples_before=16, samples_here=8, midpoint_epoch=0)
    learner = RelayLearner(
        network, DiceCELoss(), train=TrainConfig(), class_names=("background", "vessel"), ignore_index=None, in_channels=1,
        replay_size=16, position=position, options=RelayOptions(**options), replay_weights=weights,
    )
    learner.merged.fill_(True)
    return network, learner


@pytest.mark.parametrize(
    "weights, replay_batch, real",
    [
        ({0: 1.0, 1: 1.0}, "replace", 4),  # the reference: 4 of 8 real pairs replaced
        ({0: 0.5, 1: 0.0}, "replace", 7),  # mean weight 0.25: round(4 * 0.25) = 1 replaced
        ({0: 0.0, 1: 0.0}, "replace", 8),  # nothing counts: every real pair stays
        ({0: 0.0, 1: 0.0}, "append", 8),
    ],
)
def test_poor_replays_take_the_place_of_fewer_real_pairs(weights, replay_batch, real):
    _, learner = third_site_learner(weights, replay_batch=replay_batch)
    batch = {"image": torch.randn(8, 1, 32, 32), "label": torch.randint(0, 2, (8, 32, 32))}
    images, labels, replay = learner.batch_parts(batch)
    assert torch.equal(images, batch["image"][:real]) and torch.equal(labels, batch["label"][:real])
    assert len(replay.sites) == (4 if replay_batch == "replace" else 8)  # the generators still learn every site's replays
    assert set(replay.sites.tolist()) <= {0, 1}


@pytest.mark.parametrize(
    "merge, weights, kept",
    [
        ("samples", {0: 0.0, 1: 0.0}, 16 / 24),  # the reference keeps M / (M + n) whatever the replays
        ("quality", {0: 1.0, 1: 1.0}, 16 / 24),  # every replay counts: the reference's merge
        ("quality", {0: 0.5, 1: 0.0}, 0.25 * 16 / 24),  # mean weight 0.25
        ("quality", {0: 0.0, 1: 0.0}, 0.0),  # no replay counts: the weights stay as trained
    ],
)
def test_the_quality_merge_keeps_the_old_weights_as_far_as_the_replays_count(merge, weights, kept):
    network, learner = third_site_learner(weights, merge=merge)
    learner.merged.fill_(False)
    old = {name: tensor.clone() for name, tensor in learner.old.state_dict().items()}
    with torch.no_grad():  # stage 1 moved every weight by 1
        for tensor in network.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(1.0)
    learner.on_train_epoch_start()  # epoch 0: the midpoint
    for name, tensor in network.state_dict().items():
        if tensor.is_floating_point():
            assert torch.allclose(tensor, old[name] + 1.0 - kept, atol=1e-5), name


def pairs(count: int, side: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(count, 1, side, side), torch.randint(0, 2, (count, side, side))


def moved_learner(weights: dict[int, float], **options) -> RelayLearner:
    """A third site's learner in eval mode (one forward of a mixed batch = a forward of each
    part) whose solver has moved away from the received one (the teacher)."""
    network, learner = third_site_learner(weights, **options)
    learner.eval()
    with torch.no_grad():
        for parameter in network.solver.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return learner


def test_a_replay_of_quality_zero_counts_nothing():
    learner = moved_learner({0: 0.0, 1: 0.0})
    images, labels = pairs(3)
    replay = Replay(*pairs(4), torch.tensor([0, 1, 0, 1]))
    with torch.no_grad():
        seg, total = learner.solver_loss(images, labels, replay)
        alone = learner.loss(learner.model(images), labels)
    assert seg == pytest.approx(float(alone), rel=1e-6) and total == pytest.approx(float(alone), rel=1e-6)  # no replay, no distillation


@pytest.mark.parametrize("distill_on", ["replays", "batch"])
def test_the_solver_loss_weights_each_sites_replays_by_hand(distill_on):
    learner = moved_learner({0: 1.0, 1: 0.5}, distill_on=distill_on)
    student, teacher = learner.model, learner.old.solver
    images, labels = pairs(3)
    replay = Replay(*pairs(4), torch.tensor([1, 0, 1, 0]))
    first, second = replay.sites == 0, replay.sites == 1
    with torch.no_grad():
        seg = {name: learner.loss(student(x), y) for name, (x, y) in
               {"real": (images, labels), 0: (replay.images[first], replay.labels[first]),
                1: (replay.images[second], replay.labels[second])}.items()}
        kd = {name: distillation_loss(teacher(x), student(x), 2.0) for name, x in
              {"real": images, 0: replay.images[first], 1: replay.images[second]}.items()}
        got_seg, got_total = learner.solver_loss(images, labels, replay)
    expected_seg = (3 * seg["real"] + 2 * 1.0 * seg[0] + 2 * 0.5 * seg[1]) / (3 + 2 + 1)
    replays_kd = 2 * 1.0 * kd[0] + 2 * 0.5 * kd[1]
    expected_kd = replays_kd / 4 if distill_on == "replays" else (3 * kd["real"] + replays_kd) / 7
    assert got_seg == pytest.approx(float(expected_seg), rel=1e-5)
    assert got_total == pytest.approx(float(expected_seg + 0.5 * expected_kd), rel=1e-5)


def test_weights_must_name_earlier_sites_and_lie_in_0_1():
    with pytest.raises(ValueError, match=r"replay weight 1.5 of site code 0: codes \[0, 1\], weights in \[0, 1\]"):
        third_site_learner({0: 1.5})
    with pytest.raises(ValueError, match=r"replay weight 1.0 of site code 2"):
        third_site_learner({2: 1.0})


@pytest.mark.slow
def test_a_relay_run_on_vessel_sites_writes_and_logs_how_much_each_replay_counted(tmp_path, caplog):
    vessels = {
        "name": "synthetic_vessels",
        "kwargs": {"root_path": str(tmp_path / "data"), "train_per_site": 4, "test_per_site": 2, "native_size": [40, 48],
                   "img_size": [32, 32], "patch_size": [16, 16], "val_fraction": 0.25},
    }
    sites = [{"task_id": i, "task_name": name, "kwargs": {"folder": name}} for i, name in enumerate(["DRIVE", "STARE", "CHASE_DB1"], 1)]
    strategy = {"label_generator": "strokes", "strokes": 3, "image_generator_channels": 4, "discriminator_channels": 4, "quality_samples": 3,
                "replay_weighting": "quality"}
    config = load_config(tiny_config(tmp_path, "relay", sites=3, dataset=vessels, all_tasks_datasets=sites,
                                     common={"strategy": {"kwargs": strategy}, "train": {"epochs": 2}}))
    runner = ExperimentRun(config, tmp_path / "run")
    with caplog.at_level(logging.INFO, logger="siteflow.strategies.relay.strategy"):
        runner.execute()
    measured = json.loads(runner.result_path("replay_quality.json").read_text())
    counted = json.loads(runner.result_path("replay_weights.json").read_text())
    assert {stage: sorted(s) for stage, s in counted.items()} == {"STARE": ["DRIVE"], "CHASE_DB1": ["DRIVE", "STARE"]}
    for stage, by_site in counted.items():
        for site, entry in by_site.items():
            q = measured[stage][site]
            expected = min(1.0, q["solver_dice_replay"] / q["solver_dice_real"]) if q["solver_dice_real"] > 0 else 0.0
            assert entry["quality"] == pytest.approx(expected)
            if q["solver_dice_real"] < 0.5:  # quality_floor: a solver that segments too little judges nothing
                assert entry["measured_by"] == UNJUDGED and entry["weight"] == 0.0
            else:
                assert entry["measured_by"] == RATIO
                assert entry["weight"] == pytest.approx(min(1.0, max(0.0, (expected - 0.5) / 0.4)))
            assert sum(f"stage {stage}: {site}'s replays count {entry['weight']:.2f}" in r.getMessage() for r in caplog.records) == 1
