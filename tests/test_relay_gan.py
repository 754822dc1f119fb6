"""Relay's generative pieces: DiffAugment, R1, the minibatch standard deviation, the SPADE image
generator, the relay options' checks, the midpoint merge and the solver's loss, by hand on small
tensors."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from siteflow.config import TrainConfig
from siteflow.losses import DiceCELoss, distillation_loss
from siteflow.models import UNet
from siteflow.models.discriminators import MinibatchStd, ProjectionDiscriminator
from siteflow.models.generators import ImageGenerator, LabelGenerator, Spade
from siteflow.strategies.relay import RelayLearner, RelayNetwork, RelayOptions, RelayPosition, RelayStrategy
from siteflow.strategies.relay.learner import Replay, replay_count
from siteflow.strategies.relay.adversarial import Critic, class_balanced_l1, diff_augment, mode_seeking_penalty
from siteflow.strategies.relay.network import random_crops


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x (C, H, W) moved by (dy, dx) with a zero fill: out[i, j] = x[i + dy, j + dx]."""
    _, h, w = x.shape
    padded = F.pad(x, [abs(dx)] * 2 + [abs(dy)] * 2)
    return padded[:, abs(dy) + dy : abs(dy) + dy + h, abs(dx) + dx : abs(dx) + dx + w]


def test_translation_is_an_integer_shift_that_keeps_image_and_labels_together():
    torch.manual_seed(0)
    image = torch.rand(6, 1, 16, 16) + 0.1
    x = torch.cat([image, image], dim=1)  # the "label" channel equals the image
    out = diff_augment(x, ["translation"], color_channels=1)
    assert torch.equal(out[:, 0], out[:, 1])
    for before, after in zip(x, out):
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if torch.equal(shifted(before, dy, dx), after)]
        assert len(matches) == 1  # a shift of at most 1/8 of the side
    assert not all(torch.equal(a, b) for a, b in zip(x, out))


def test_cutout_erases_one_half_side_square_in_every_channel():
    torch.manual_seed(1)
    out = diff_augment(torch.ones(8, 2, 16, 16), ["cutout"], color_channels=1)
    for sample in out:
        assert torch.equal(sample[0], sample[1])
        rows, cols = torch.nonzero(sample[0] == 0, as_tuple=True)
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert len(rows) == height * width and height <= 8 and width <= 8  # a rectangle, clipped at the border
    assert any(int((s[0] == 0).sum()) == 64 for s in out)


def test_color_changes_only_the_image_channels():
    torch.manual_seed(2)
    x = torch.rand(4, 5, 8, 8)
    out = diff_augment(x, ["color"], color_channels=3)
    assert torch.equal(out[:, 3:], x[:, 3:]) and not torch.allclose(out[:, :3], x[:, :3])


class LinearCritic(nn.Module):
    """D(x) = <w, x>: its input gradient is w for every sample, so R1 is ||w||^2."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x: torch.Tensor, site: torch.Tensor) -> torch.Tensor:
        return (x * self.weight).sum(dim=(1, 2, 3))


def test_discriminator_loss_with_lazy_r1_by_hand():
    weight = torch.tensor([[[[0.5, -1.0], [2.0, 0.0]]]])
    critic = Critic(LinearCritic(weight), color_channels=0, augment=(), r1_gamma=0.2)
    real, fake = torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)
    sites = torch.zeros(2, dtype=torch.long)
    plain = F.softplus(torch.tensor(-1.5)) + F.softplus(torch.tensor(0.0))  # D(real) = 1.5, D(fake) = 0
    assert critic.discriminator_loss(real, fake, sites).item() == pytest.approx(plain.item())
    r1 = 4 * 0.2 / 2 * (0.25 + 1 + 4)  # interval 4, gamma 0.2, ||w||^2 = 5.25
    loss = critic.discriminator_loss(real, fake, sites, r1_scale=4)
    assert loss.item() == pytest.approx(plain.item() + r1)
    loss.backward()  # twice differentiable: the R1 term reaches the weights
    expected = -torch.sigmoid(torch.tensor(-1.5)) * real[0] + torch.sigmoid(torch.tensor(0.0)) * fake[0] + 4 * 0.2 * weight
    assert torch.allclose(critic.discriminator.weight.grad, expected, atol=1e-6)


def test_r1_passes_through_diffaugment_into_a_real_discriminator():
    torch.manual_seed(3)
    critic = Critic(ProjectionDiscriminator(4, 16, channels=4), color_channels=3, augment=("color", "translation", "cutout"), r1_gamma=1.0)
    real, fake = torch.rand(4, 4, 16, 16), torch.rand(4, 4, 16, 16)
    sites = torch.tensor([0, 1, 0, 1])
    torch.manual_seed(4)
    plain = critic.discriminator_loss(real, fake, sites)
    torch.manual_seed(4)
    regularised = critic.discriminator_loss(real, fake, sites, r1_scale=1.0)
    assert regularised > plain
    regularised.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in critic.parameters())


def test_minibatch_std_by_hand():
    values = torch.tensor([1.0, 2.0, 3.0, 5.0])
    x = values[:, None, None, None].expand(4, 2, 3, 3)
    whole = MinibatchStd(4)(x)
    assert whole.shape == (4, 3, 3, 3) and torch.equal(whole[:, :2], x)
    assert torch.allclose(whole[:, 2], torch.full((4, 3, 3), values.std(unbiased=False).item()), atol=1e-4)
    pairs = MinibatchStd(2)(x)[:, 2, 0, 0]  # groups {0, 2} and {1, 3}
    assert torch.allclose(pairs, torch.tensor([1.0, 1.5, 1.0, 1.5]), atol=1e-4)
    collapsed = MinibatchStd(4)(torch.ones(4, 2, 3, 3))[:, 2]
    assert collapsed.max() < 1e-3
    assert MinibatchStd(4)(torch.rand(6, 1, 2, 2)).shape == (6, 2, 2, 2)  # groups of 3


def test_the_spade_generator_is_conditioned_on_the_label_map_in_every_block():
    torch.manual_seed(5)
    generator = ImageGenerator(3, 1, 32, z_dim=8, channels=4)
    spades = [m for m in generator.modules() if isinstance(m, Spade)]
    assert len(spades) >= 2 * len(generator.blocks) == 6  # 4->8->16->32, two normalisations per block at least
    z, noise = generator.sample_noise(2)
    assert z.shape == (2, 8) and noise.shape == (2, 8, 32, 32)
    sites = torch.tensor([0, 1])
    labels = F.one_hot(torch.randint(0, 3, (2, 32, 32)), 3).movedim(-1, 1).float()
    image = generator(z, sites, labels, noise)
    assert image.shape == (2, 1, 32, 32) and image.abs().max() <= 1
    other = labels.roll(8, dims=-1)
    assert not torch.allclose(generator(z, sites, other, noise), image)
    assert not torch.allclose(generator(z, sites.flip(0), labels, noise), image)  # the site matters too


def test_the_noise_maps_change_the_texture_and_not_the_label_maps_place():
    torch.manual_seed(7)
    generator = ImageGenerator(2, 1, 32, z_dim=8, channels=4)
    z, noise = generator.sample_noise(1)
    labels = F.one_hot(torch.zeros(1, 32, 32, dtype=torch.long), 2).movedim(-1, 1).float()
    image = generator(z, torch.tensor([0]), labels, noise)
    other = generator(z, torch.tensor([0]), labels, torch.randn_like(noise))  # same z, same map, other noise maps
    assert (other - image).abs().mean() > 1e-3  # a texture of its own
    replay_a = torch.Generator().manual_seed(3)
    replay_b = torch.Generator().manual_seed(3)
    assert all(torch.equal(a, b) for a, b in zip(generator.sample_noise(2, generator=replay_a), generator.sample_noise(2, generator=replay_b)))


def test_the_image_generator_uses_no_batch_statistics():
    torch.manual_seed(6)
    generator = ImageGenerator(2, 3, 16, z_dim=8, channels=4).train()
    z, noise = generator.sample_noise(3)
    sites = torch.tensor([0, 1, 2])
    maps = F.one_hot(torch.randint(0, 2, (3, 16, 16)), 2).movedim(-1, 1).float()
    together = generator(z, sites, maps, noise)
    alone = torch.cat([generator(z[i : i + 1], sites[i : i + 1], maps[i : i + 1], noise[i : i + 1]) for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-5)
    assert torch.allclose(generator.eval()(z, sites, maps, noise), together, atol=1e-6)  # replays as it trained


def test_class_balanced_l1_by_hand():
    labels = torch.zeros(1, 2, 2, 2)
    labels[0, 1, 0, 0] = 1  # one vessel pixel
    labels[0, 0] = 1 - labels[0, 1]  # three background pixels
    real = torch.zeros(1, 1, 2, 2)
    fake = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])  # wrong only at the vessel
    assert class_balanced_l1(fake, real, labels).item() == pytest.approx((1.0 + 0.0) / 2)  # a plain L1: 1 / 4
    assert F.l1_loss(fake, real).item() == pytest.approx(0.25)
    no_vessel = torch.cat([torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)], dim=1)
    assert class_balanced_l1(fake, real, no_vessel).item() == pytest.approx(0.25)  # an absent class is not averaged in


def test_the_label_generator_draws_maps_of_its_side():
    logits = LabelGenerator(3, 32, z_dim=8, channels=16)(torch.randn(2, 8), torch.tensor([0, 5]))
    assert logits.shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="image_size must be a power of two >= 16, got 24"):
        LabelGenerator(3, 24)


def test_mode_seeking_penalty_by_hand():
    outputs = torch.tensor([[0.0, 0.0], [1.0, 3.0]])  # |G(z_a) - G(z_b)| has mean 2
    z = torch.tensor([[0.0], [4.0]])  # |z_a - z_b| = 4
    assert mode_seeking_penalty(outputs, z, eps=0.0).item() == pytest.approx(1 / (2 / 4))
    collapsed = mode_seeking_penalty(torch.ones(4, 3), torch.randn(4, 8))
    assert collapsed.item() == pytest.approx(1e5)  # 1 / eps: the largest penalty
    with pytest.raises(ValueError, match="at least 2 samples"):
        mode_seeking_penalty(torch.ones(1, 3), torch.randn(1, 8))


def test_random_crops_cut_the_same_window_from_image_and_labels():
    images = torch.arange(2 * 8 * 8, dtype=torch.float32).view(2, 1, 8, 8)
    labels = images[:, 0].long()
    crops, crop_labels = random_crops(images, labels, 4, generator=torch.Generator().manual_seed(0))
    assert crops.shape == (2, 1, 4, 4) and torch.equal(crops[:, 0].long(), crop_labels)
    for crop, image in zip(crops, images):
        top, left = divmod(int(crop[0, 0, 0]) % 64, 8)
        assert torch.equal(crop, image[:, top : top + 4, left : left + 4])
    with pytest.raises(ValueError, match="cannot crop 16x16 patches from 8x8 images"):
        random_crops(images, labels, 16)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"replay_fraction": 1.0}, r"replay_fraction must be in \(0, 1\), got 1.0"),
        ({"replay_fraction": 0.0}, r"replay_fraction must be in \(0, 1\), got 0.0"),
        ({"replay_size": 48}, r"replay_size must be a power of two >= 16 \(the generators' sides\), got 48"),
        ({"replay_size": 8}, r"replay_size must be a power of two >= 16"),
        ({"d_augment": ("color", "color")}, r"d_augment must list distinct transforms"),
        ({"r1_gamma": -1.0}, r"r1_gamma must be non-negative, got -1.0"),
        ({"r1_interval": 0}, r"r1_interval must be positive, got 0"),
        ({"quality_samples": 1}, r"quality_samples must be 0 \(off\) or at least 2"),
        ({"merge": "mean"}, r"merge must be 'samples', 'quality' or 'none', got 'mean'"),
        ({"distill_on": "real"}, r"distill_on must be 'replays' or 'batch', got 'real'"),
        ({"replay_batch": "mix"}, r"replay_batch must be 'replace' or 'append', got 'mix'"),
        ({"replay_labels": "solver"}, r"replay_labels must be 'generated' or 'teacher', got 'solver'"),
        ({"mode_seeking": -0.1}, r"mode_seeking must be non-negative, got -0.1"),
        ({"image_mode_seeking": -1.0}, r"image_mode_seeking must be non-negative, got -1.0"),
    ],
)
def test_options_are_checked_on_creation(options, message):
    with pytest.raises(ValueError, match=message):
        RelayStrategy(**options)


@pytest.mark.parametrize(
    "image_size, replay_size, expected",
    [
        ((64, 64), None, 64),
        ((96, 128), 64, 64),
        ((64, 64), 128, r"common\.strategy\.kwargs\.replay_size: 128 is larger than the solver's input 64x64; .* power of two <= 64"),
        ((96, 96), None, r"the solver's input is 96x96: set common\.strategy\.kwargs\.replay_size \(a power of two <= 96\)"),
        ((64, 32), None, r"the solver's input is 64x32"),
        (None, 64, r"relay needs 2D training inputs of one size \(set the dataset's img_size or patch_size\)"),
    ],
)
def test_the_replay_side_must_build_the_solvers_input(image_size, replay_size, expected):
    options = RelayOptions(replay_size=replay_size)
    if isinstance(expected, int):
        assert options.replay_side(image_size) == expected
    else:
        with pytest.raises(ValueError, match=expected):
            options.replay_side(image_size)


def relay_network(fill: float) -> RelayNetwork:
    network = RelayNetwork(
        UNet(1, 2, base_channels=4, depth=2), LabelGenerator(2, 16, z_dim=4, channels=16), ImageGenerator(2, 1, 16, z_dim=4, channels=4)
    )
    with torch.no_grad():
        for tensor in network.state_dict().values():
            if tensor.is_floating_point():
                tensor.fill_(fill)
    return network


@pytest.mark.parametrize("merge, expected", [("samples", 8 / 25), ("none", 1.0)])
def test_the_midpoint_merge_keeps_M_over_M_plus_n_of_the_old_weights(merge, expected):
    old = relay_network(0.0)
    network = relay_network(0.0)  # received: the learner keeps a frozen copy of it
    learner = RelayLearner(
        network, DiceCELoss(), train=TrainConfig(), class_names=("background", "vessel"), ignore_index=None, in_channels=1,
        replay_size=16, position=RelayPosition(site_code=1, previous_codes=(0,), samples_before=17, samples_here=8, midpoint_epoch=0),
        options=RelayOptions(merge=merge),
    )
    assert all(torch.equal(a, b) for a, b in zip(learner.old.state_dict().values(), old.state_dict().values()))
    with torch.no_grad():  # stage 1 moved every weight to 1
        for tensor in network.state_dict().values():
            if tensor.is_floating_point():
                tensor.fill_(1.0)
    learner.on_train_epoch_start()  # epoch 0 = the midpoint: (8 * 1 + 17 * 0) / 25 with the reference's merge
    assert bool(learner.merged)
    values = torch.cat([t.flatten() for t in network.state_dict().values() if t.is_floating_point()])
    assert torch.allclose(values, torch.full_like(values, expected))  # M = 17, n = 8: 68% of the old model kept


@pytest.mark.parametrize(
    "real, share, batch, expected",
    [
        (8, 0.5, "replace", 4),  # 4 real + 4 replays
        (8, 0.25, "replace", 2),
        (2, 0.9, "replace", 1),  # one real pair is always left
        (1, 0.5, "replace", 0),  # ... so a batch of one gets none
        (8, 0.5, "append", 8),  # 8 real + 8 replays
        (8, 0.25, "append", 3),  # 8/3 rounded: 3 of 11
        (1, 0.5, "append", 1),
        (1, 0.1, "append", 1),  # at least one
    ],
)
def test_replays_take_the_share_of_the_solvers_batch(real, share, batch, expected):
    assert replay_count(real, share, batch) == expected


def second_site_learner(options: RelayOptions) -> tuple[RelayNetwork, RelayLearner]:
    """A randomly initialised relay network (seed 0) received by the second site, and its
    learner (past the midpoint: epoch 0 is the midpoint)."""
    torch.manual_seed(0)
    network = RelayNetwork(
        UNet(1, 2, base_channels=4, depth=2), LabelGenerator(2, 16, z_dim=4, channels=16), ImageGenerator(2, 1, 16, z_dim=4, channels=4)
    )
    position = RelayPosition(site_code=1, previous_codes=(0,), samples_before=17, samples_here=8, midpoint_epoch=0)
    learner = RelayLearner(
        network, DiceCELoss(), train=TrainConfig(), class_names=("background", "vessel"), ignore_index=None, in_channels=1,
        replay_size=16, position=position, options=options,
    )
    return network, learner


@pytest.mark.parametrize("replay_batch, real, replays", [("replace", 4, 4), ("append", 8, 8)])
def test_a_stage_two_batch_keeps_its_real_pairs_or_gives_half_to_replays(replay_batch, real, replays):
    _, learner = second_site_learner(RelayOptions(replay_batch=replay_batch))
    batch = {"image": torch.randn(8, 1, 32, 32), "label": torch.randint(0, 2, (8, 32, 32))}
    images, labels, replay = learner.batch_parts(batch)
    assert replay is None and len(images) == 8  # stage 1: before the midpoint merge
    learner.merged.fill_(True)
    images, labels, replay = learner.batch_parts(batch)
    assert torch.equal(images, batch["image"][:real]) and torch.equal(labels, batch["label"][:real])
    assert replay.images.shape == (replays, 1, 16, 16) and replay.labels.shape == (replays, 16, 16)
    assert replay.sites.tolist() == [0] * replays  # the one earlier site


def stage_two(options: RelayOptions, replays: int) -> tuple[RelayLearner, torch.Tensor, torch.Tensor, Replay]:
    """A second site's learner in eval mode (batch norm on running statistics: one forward of
    a mixed batch = a forward of each part) whose solver has moved away from the received one
    (the teacher), with 3 real 16x16 pairs and ``replays`` replayed ones."""
    network, learner = second_site_learner(options)
    learner.eval()
    with torch.no_grad():
        for parameter in network.solver.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    images, labels = torch.randn(3, 1, 16, 16), torch.randint(0, 2, (3, 16, 16))
    replay = Replay(torch.randn(replays, 1, 16, 16), torch.randint(0, 2, (replays, 16, 16)), torch.zeros(replays, dtype=torch.long))
    return learner, images, labels, replay


@pytest.mark.parametrize("distill_on", ["replays", "batch"])
def test_the_solver_is_distilled_on_the_replays_or_on_every_image(distill_on):
    learner, images, labels, replay = stage_two(RelayOptions(distill_on=distill_on), replays=1)
    student, teacher = learner.model, learner.old.solver
    with torch.no_grad():
        seg_real, seg_replay = learner.loss(student(images), labels), learner.loss(student(replay.images), replay.labels)
        kd_real = distillation_loss(teacher(images), student(images), 2.0)
        kd_replay = distillation_loss(teacher(replay.images), student(replay.images), 2.0)
        seg, total = learner.solver_loss(images, labels, replay)  # stage 2: 3 real, 1 replayed
        assert seg == pytest.approx(float((3 * seg_real + seg_replay) / 4), rel=1e-5)
        kd = (3 * kd_real + kd_replay) / 4 if distill_on == "batch" else kd_replay
        assert total == pytest.approx(float(seg + 0.5 * kd), rel=1e-5)
        seg, total = learner.solver_loss(images, labels, None)  # stage 1: real pairs only
        assert seg == pytest.approx(float(seg_real), rel=1e-5)
        assert total == pytest.approx(float(seg_real + (0.5 * kd_real if distill_on == "batch" else 0.0)), rel=1e-5)
        self_kd = distillation_loss(student(images), student(images), 2.0)  # what a teacher equal to the student gives
        assert abs(kd_real - self_kd) > 1e-4  # the old solver is the teacher, not the current one (the reference's bug)


@pytest.mark.parametrize("replay_labels", ["generated", "teacher"])
def test_the_solver_learns_a_replay_with_its_generated_map_or_the_old_solvers(replay_labels):
    learner, images, labels, replay = stage_two(RelayOptions(replay_labels=replay_labels), replays=2)
    student, teacher = learner.model, learner.old.solver
    with torch.no_grad():
        teacher_labels = teacher(replay.images).argmax(1)
        assert not torch.equal(teacher_labels, replay.labels)  # the two label maps differ: the test tells them apart
        expected_labels = teacher_labels if replay_labels == "teacher" else replay.labels
        seg_real, seg_replay = learner.loss(student(images), labels), learner.loss(student(replay.images), expected_labels)
        seg, _ = learner.solver_loss(images, labels, replay)
    assert seg == pytest.approx(float((3 * seg_real + 2 * seg_replay) / 5), rel=1e-5)


def test_replays_of_another_size_leave_the_running_statistics_to_the_real_images():
    network, learner = second_site_learner(RelayOptions())
    learner.train()
    images, labels = torch.randn(3, 1, 32, 32), torch.randint(0, 2, (3, 32, 32))
    replay = Replay(5 + 3 * torch.randn(2, 1, 16, 16), torch.randint(0, 2, (2, 16, 16)), torch.zeros(2, dtype=torch.long))
    real_only = copy.deepcopy(network.solver)
    real_only(images)  # the running statistics one training forward of the real images leaves
    learner.solver_loss(images, labels, replay)
    norms = [name for name, _ in real_only.named_buffers() if name.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert norms
    expected, actual = dict(real_only.named_buffers()), dict(network.solver.named_buffers())
    assert all(torch.allclose(actual[name].float(), expected[name].float()) for name in norms)
    assert all(norm.momentum == 0.1 for norm in network.solver.modules() if isinstance(norm, nn.BatchNorm2d))  # restored
