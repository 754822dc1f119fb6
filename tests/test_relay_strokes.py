"""The stroke label generator: maps drawn as curves (checked by hand on a straight stroke and
against a brute-force distance), its checks, and a relay run on vessel sites that uses it."""

from __future__ import annotations

import json
import math

import pytest
import torch

from siteflow.config import load_config
from siteflow.engine.runner import ExperimentRun
from siteflow.models.strokes import MAX_HALF_WIDTH, MIN_HALF_WIDTH, REACH, StrokeLabelGenerator
from siteflow.strategies.relay import RelayStrategy
from tests.experiments import tiny_config

SIDE = 16
ABSENT = -1000.0  # a presence logit that draws nothing


def stroke_parameters(control: list[tuple[float, float]], half_width: float, presence: float) -> list[float]:
    """The MLP outputs that draw one curve through control points (x, y) in pixels."""
    coordinates = [math.atanh((value / SIDE - 0.5) / (0.5 + REACH)) for point in control for value in point]
    share = (half_width - MIN_HALF_WIDTH) / (MAX_HALF_WIDTH - MIN_HALF_WIDTH)
    return [*coordinates, math.log(share / (1 - share)), presence]


def fixed_generator(strokes: list[list[float]]) -> StrokeLabelGenerator:
    """A generator whose MLP ignores its input and outputs ``strokes``' parameters."""
    generator = StrokeLabelGenerator(2, SIDE, z_dim=4, strokes=len(strokes))
    last = generator.mlp[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([value for stroke in strokes for value in stroke]))
    return generator


def draw(generator: StrokeLabelGenerator, count: int = 2) -> torch.Tensor:
    return generator(torch.randn(count, generator.z_dim), torch.arange(count))


def test_a_straight_stroke_covers_the_rows_within_its_half_width():
    # a horizontal line through y = 8 (between rows 7 and 8), half-width 1.25 pixels, present;
    # a second stroke elsewhere, absent
    line = stroke_parameters([(0.0, 8.0), (8.0, 8.0), (16.0, 8.0)], half_width=1.25, presence=0.0)
    hidden = stroke_parameters([(2.0, 2.0), (3.0, 3.0), (4.0, 2.0)], half_width=3.0, presence=ABSENT)
    logits = draw(fixed_generator([line, hidden]))
    assert logits.shape == (2, 2, SIDE, SIDE)
    assert torch.equal(logits[:, 0], torch.zeros(2, SIDE, SIDE))  # background logit
    # row r's centre is at y = r + 0.5: foreground logit (1.25 - |r + 0.5 - 8|) / 0.5 in every column
    expected = torch.tensor([(1.25 - abs(row + 0.5 - 8)) / 0.5 for row in range(SIDE)])[:, None].expand(SIDE, SIDE)
    assert torch.allclose(logits[0, 1], expected, atol=1e-4)
    labels = logits.argmax(dim=1)
    assert torch.equal(labels[0].nonzero()[:, 0].unique(), torch.tensor([7, 8]))  # two rows, 16 pixels each
    assert torch.equal(labels[0], labels[1])


def test_curves_are_measured_to_their_polyline():
    torch.manual_seed(0)
    generator = StrokeLabelGenerator(2, SIDE, z_dim=4, strokes=3, points=5)
    control = torch.rand(2, 3, 3, 2) * 24 - 4
    distances = generator.distances(control)  # (N, K, S * S)
    t = torch.linspace(0, 1, 5)
    curve = ((1 - t) ** 2)[:, None] * control[:, :, None, 0] + (2 * (1 - t) * t)[:, None] * control[:, :, None, 1]
    curve = curve + (t**2)[:, None] * control[:, :, None, 2]  # (N, K, 5, 2) points of the curve
    fine = torch.linspace(0, 1, 2001)[:, None]
    segments = zip(curve.unbind(2), curve[:, :, 1:].unbind(2))
    dense = torch.cat([a[:, :, None] + fine * (b - a)[:, :, None] for a, b in segments], dim=2)  # (N, K, 4 * 2001, 2) on the polyline
    centres = torch.arange(SIDE) + 0.5
    pixels = torch.stack(torch.meshgrid(centres, centres, indexing="ij")[::-1], dim=-1).reshape(-1, 2)  # (x, y)
    brute = torch.cdist(dense.reshape(-1, dense.shape[2], 2), pixels[None].expand(6, -1, -1)).amin(dim=1).view(2, 3, -1)
    assert torch.allclose(distances, brute, atol=0.02)  # the dense sampling's step


def test_absent_strokes_draw_nothing_and_gradients_reach_every_weight():
    absent = stroke_parameters([(0.0, 8.0), (8.0, 8.0), (16.0, 8.0)], half_width=3.0, presence=ABSENT)
    assert not draw(fixed_generator([absent, absent])).argmax(dim=1).any()

    torch.manual_seed(0)
    generator = StrokeLabelGenerator(2, SIDE, z_dim=4, strokes=2)
    draw(generator, 4)[:, 1].sigmoid().mean().backward()
    for name, parameter in generator.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    assert generator.mlp[0].weight.grad.abs().sum() > 0
    assert generator.site_embedding.weight.grad[:4].abs().sum() > 0  # the sites drawn


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_classes": 3}, r"strokes draw binary label maps \(2 classes: background and the structure\), got 3 classes"),
        ({"image_size": 24}, r"image_size must be a power of two >= 16, got 24"),
        ({"strokes": 0}, r"need strokes >= 1, points >= 2 and hidden >= 1, got 0, 12, 256"),
        ({"points": 1}, r"need strokes >= 1, points >= 2 and hidden >= 1, got 8, 1, 256"),
        ({"max_half_width": 0.5}, r"need max_half_width > 0.75 and softness > 0, got 0.5, 0.5"),
        ({"softness": 0.0}, r"need max_half_width > 0.75 and softness > 0, got 4.0, 0.0"),
    ],
)
def test_the_generator_checks_its_arguments(kwargs, message):
    arguments = {"num_classes": 2, "image_size": SIDE, **kwargs}
    with pytest.raises(ValueError, match=message):
        StrokeLabelGenerator(arguments.pop("num_classes"), arguments.pop("image_size"), **arguments)


def test_relay_refuses_strokes_for_more_than_two_classes_and_unknown_generators():
    strategy = RelayStrategy(label_generator="strokes", z_dim=4)
    assert isinstance(strategy.build_label_generator(["background", "vessel"], SIDE), StrokeLabelGenerator)
    with pytest.raises(ValueError, match=r"common\.strategy\.kwargs\.label_generator: 'strokes' draws binary label maps .* 3 classes "
                                         r"\['background', 'disc', 'cup'\]: use 'convolutional'"):
        strategy.build_label_generator(["background", "disc", "cup"], SIDE)
    with pytest.raises(ValueError, match=r"label_generator must be 'convolutional' or 'strokes', got 'pixels'"):
        RelayStrategy(label_generator="pixels")
    with pytest.raises(ValueError, match=r"strokes must be positive, got 0"):
        RelayStrategy(strokes=0)


@pytest.mark.slow
def test_a_relay_run_on_vessel_sites_replays_stroke_label_maps(tmp_path):
    vessels = {
        "name": "synthetic_vessels",
        "kwargs": {"root_path": str(tmp_path / "data"), "train_per_site": 4, "test_per_site": 2, "native_size": [40, 48],
                   "img_size": [32, 32], "patch_size": [16, 16], "val_fraction": 0.25},
    }
    sites = [{"task_id": i, "task_name": name, "kwargs": {"folder": name}} for i, name in enumerate(["DRIVE", "STARE"], 1)]
    strategy = {"label_generator": "strokes", "strokes": 3, "image_generator_channels": 4, "discriminator_channels": 4, "quality_samples": 3}
    config = load_config(tiny_config(tmp_path, "relay", sites=2, dataset=vessels, all_tasks_datasets=sites,
                                     common={"strategy": {"kwargs": strategy}, "train": {"epochs": 2}}))
    runner = ExperimentRun(config, tmp_path / "run")
    assert isinstance(runner.strategy.build_network(runner.task).label_generator, StrokeLabelGenerator)
    summary = runner.execute()["dice"]
    assert set(summary["final_per_site"]) == {"DRIVE", "STARE"}
    quality = json.loads(runner.result_path("replay_quality.json").read_text())["STARE"]["DRIVE"]
    assert quality["samples"] == 3 and 0 <= quality["foreground_replay"] <= 1 and quality["components_replay"] >= 0
