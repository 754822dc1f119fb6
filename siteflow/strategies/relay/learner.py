"""The relay learner: generators, discriminators and solver trained together at one site."""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Callable, Iterator, Mapping, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from siteflow.config import TrainConfig
from siteflow.losses import distillation_loss
from siteflow.models.discriminators import ProjectionDiscriminator
from siteflow.strategies.base import SetupRefused
from siteflow.strategies.relay.adversarial import Critic, class_balanced_l1, mode_seeking_penalty
from siteflow.strategies.relay.network import RelayNetwork, merge_by_samples, random_crops
from siteflow.strategies.relay.options import RelayOptions, RelayPosition, ReplayBatch
from siteflow.tasks import SegmentationLearner
from siteflow.tasks.base import Batch

class Replay(NamedTuple):
    """Replayed pairs of earlier sites: images (R, C, P, P), labels (R, P, P) int64, site codes (R,)."""

    images: torch.Tensor
    labels: torch.Tensor
    sites: torch.Tensor


BatchAugment = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""(images (N, C, H, W), labels (N, H, W)) -> the same, augmented (replay post-augmentation)."""


class RelayLearner(SegmentationLearner):
    """Trains the solver and the generators at one site (Lightning manual optimisation).

    Every step: the discriminators, then the generators, learn (image, label map) pairs of
    side ``replay_size`` (random crops of the real pairs, and in stage 2 the replays of earlier
    sites); then the solver learns the real pairs and the replays (augmented by
    ``replay_augment``), with distillation towards the old solver on the replays.

    Args:
        network: the received network (solver and generators), trained in place.
        loss: the segmentation loss.
        train, class_names, ignore_index: as for the segmentation learner.
        in_channels: the images' channels.
        replay_size: side of the generators' squares (see :meth:`RelayOptions.replay_side`).
        position: this site's place in the relay (codes, sample counts, midpoint).
        options: the relay options.
        replay_augment: the augmentation of replayed pairs before the solver sees them
            (the reference's replay post-augmentation); None: replays as generated.
        replay_weights: earlier site code -> how much its replays count for the solver, in
            [0, 1] (see :mod:`~siteflow.strategies.relay.replay_weights`): the factor of their
            segmentation loss and distillation; a site of weight 0 gives the solver no
            replays, and with ``replay_batch: replace`` replays take the place of real pairs
            only in proportion to the mean weight. None: every site's replays count 1.
    """

    def __init__(
        self,
        network: RelayNetwork,
        loss: nn.Module,
        *,
        train: TrainConfig,
        class_names: Sequence[str],
        ignore_index: int | None,
        in_channels: int,
        replay_size: int,
        position: RelayPosition,
        options: RelayOptions,
        replay_augment: BatchAugment | None = None,
        replay_weights: Mapping[int, float] | None = None,
    ) -> None:
        super().__init__(network.solver, loss, train=train, class_names=class_names, ignore_index=ignore_index)
        self.automatic_optimization = False
        self.label_generator = network.label_generator
        self.image_generator = network.image_generator
        num_classes = len(class_names)

        def critic(channels: int, color_channels: int) -> Critic:
            discriminator = ProjectionDiscriminator(channels, replay_size, channels=options.discriminator_channels)
            return Critic(discriminator, color_channels=color_channels, augment=options.d_augment, r1_gamma=options.r1_gamma)

        self.label_critic = critic(num_classes, 0)
        self.image_critic = critic(in_channels + num_classes, in_channels)
        self.old = copy.deepcopy(network).eval().requires_grad_(False) if position.previous_codes else None
        self.register_buffer("merged", torch.tensor(False))
        self.register_buffer("previous_codes", torch.tensor(list(position.previous_codes), dtype=torch.long))
        weights = torch.ones(max(position.previous_codes, default=-1) + 1)
        for code, weight in (replay_weights or {}).items():
            if code not in position.previous_codes or not 0.0 <= weight <= 1.0:
                raise ValueError(f"replay weight {weight} of site code {code}: codes {list(position.previous_codes)}, weights in [0, 1]")
            weights[code] = weight
        self.register_buffer("replay_weights", weights)
        self.position = position
        self.options = options
        self.num_classes = num_classes
        self.replay_size = replay_size
        self.replay_augment = replay_augment

    def setup(self, stage: str) -> None:
        if self.trainer.world_size > 1:
            raise SetupRefused(
                f"relay trains its generators, discriminators and solver with three optimisers per step (manual "
                f"optimisation), which DDP over {self.trainer.world_size} processes cannot synchronise: train relay "
                "on one device (-g with one GPU index, or without --cpu-processes)"
            )

    def train(self, mode: bool = True) -> "RelayLearner":
        super().train(mode)
        if self.old is not None:
            self.old.eval()  # the old networks stay frozen, batch norm statistics included
        return self

    def on_train_epoch_start(self) -> None:
        if self.current_epoch >= self.position.midpoint_epoch and not self.merged:
            if self.old is not None and self.options.merge != "none":
                network = RelayNetwork(self.model, self.label_generator, self.image_generator)
                merge_by_samples(network, self.old, self.position.samples_here, self.position.samples_before, share=self.merge_share)
            self.merged.fill_(True)

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        size = len(batch["image"])
        images, labels, replay = self.batch_parts(batch)

        # generators and discriminators: pairs at the replay side, real crops and replays
        gan_images, gan_labels = random_crops(images, self._valid(labels), self.replay_size)
        gan_sites = torch.full((len(images),), self.position.site_code, device=images.device, dtype=torch.long)
        if replay is not None:
            gan_images = torch.cat([gan_images, replay.images])
            gan_labels = torch.cat([gan_labels, replay.labels])
            gan_sites = torch.cat([gan_sites, replay.sites])
        d_loss, g_loss = self._adversarial_step(gan_images, gan_labels, gan_sites, regularise=batch_idx % self.options.r1_interval == 0)

        seg_loss, solver_loss = self._solver_step(images, labels, replay)
        self.log("train/loss", seg_loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        self.log("train/solver_loss", solver_loss, on_epoch=True, batch_size=size)
        self.log("train/d_loss", d_loss, on_epoch=True, prog_bar=True, batch_size=size)
        self.log("train/g_loss", g_loss, on_epoch=True, prog_bar=True, batch_size=size)

    def on_train_epoch_end(self) -> None:
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()

    def configure_optimizers(self):
        solver = super().configure_optimizers()
        generators = torch.optim.Adam(
            [*self.label_generator.parameters(), *self.image_generator.parameters()], lr=self.options.gan_lr, betas=(0.5, 0.999)
        )
        discriminators = torch.optim.Adam(
            [*self.label_critic.parameters(), *self.image_critic.parameters()], lr=self.options.gan_lr, betas=(0.5, 0.999)
        )
        if isinstance(solver, dict):
            return [solver["optimizer"], generators, discriminators], [solver["lr_scheduler"]]
        return [solver, generators, discriminators]

    def batch_parts(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, Replay | None]:
        """The real pairs a training step learns from (images (N, C, H, W), labels (N, H, W))
        and its replays of every earlier site (None in stage 1 and at the first site), which
        the generators all learn from: with ``replay_batch: replace`` the replays take the
        place of the batch's last pairs in proportion to the earlier sites' mean replay
        weight (all of their count at weight 1, none at 0: the solver then keeps every real
        pair), with ``append`` every pair stays."""
        size = len(batch["image"])
        count = replay_count(size, self.options.replay_fraction, self.options.replay_batch) if self.replaying else 0
        replaced = round(count * float(self.replay_weights[self.previous_codes].mean())) if count else 0
        keep = size - replaced if self.options.replay_batch == "replace" else size
        replay = self._replay(count, batch["image"].device) if count else None
        return batch["image"][:keep], batch["label"][:keep], replay

    @property
    def merge_share(self) -> float:
        """How much of the reference's merge share ``M / (M + n_k)`` the midpoint merge keeps:
        the earlier sites' mean replay weight with ``merge: quality``, else 1."""
        if self.options.merge != "quality" or not len(self.previous_codes):
            return 1.0
        return float(self.replay_weights[self.previous_codes].mean())

    @property
    def replaying(self) -> bool:
        """Whether this is stage 2 at a site after the first: the batches get replays."""
        return self.old is not None and bool(self.merged)

    def _replay(self, count: int, device: torch.device) -> Replay:
        """``count`` replays of earlier sites, the sites drawn uniformly."""
        sites = self.previous_codes[torch.randint(len(self.previous_codes), (count,), device=device)]
        return Replay(*self.old.replay(sites, self.num_classes), sites)

    def _adversarial_step(
        self, images: torch.Tensor, labels: torch.Tensor, sites: torch.Tensor, *, regularise: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One discriminator and one generator update on pairs (images (N, C, P, P), labels
        (N, P, P)) of sites (N,); returns both losses. ``regularise``: add R1 (lazy)."""
        generator_optimizer, discriminator_optimizer = self.optimizers()[1:]
        one_hot = F.one_hot(labels, self.num_classes).movedim(-1, 1).float()
        z_label = torch.randn(len(sites), self.label_generator.z_dim, device=sites.device)
        label_logits = self.label_generator(z_label, sites)
        fake_labels = F.gumbel_softmax(label_logits, tau=1.0, hard=True, dim=1)  # one-hot, straight-through gradients
        z_image, noise = self.image_generator.sample_noise(len(sites), device=sites.device)
        fake_images = self.image_generator(z_image, sites, one_hot, noise)  # rendered from the real label maps
        r1_scale = self.options.r1_interval if regularise else 0.0
        d_loss = self.label_critic.discriminator_loss(one_hot, fake_labels, sites, r1_scale=r1_scale) + self.image_critic.discriminator_loss(
            torch.cat([images, one_hot], 1), torch.cat([fake_images, one_hot], 1), sites, r1_scale=r1_scale
        )
        discriminator_optimizer.zero_grad()
        self.manual_backward(d_loss)
        discriminator_optimizer.step()

        # the image generator also reconstructs the image that belongs to the label map (each
        # class's pixels counting alike), and different noises must render different images
        g_loss = (
            self.label_critic.generator_loss(fake_labels, sites)
            + self.image_critic.generator_loss(torch.cat([fake_images, one_hot], 1), sites)
            + self.options.image_l1_weight * class_balanced_l1(fake_images, images, one_hot)
        )
        if len(sites) > 1:
            if self.options.mode_seeking:
                g_loss = g_loss + self.options.mode_seeking * mode_seeking_penalty(label_logits.softmax(1), z_label)
            if self.options.image_mode_seeking:
                image_noise = torch.cat([z_image, noise.flatten(1)], dim=1)
                g_loss = g_loss + self.options.image_mode_seeking * mode_seeking_penalty(fake_images, image_noise)
        generator_optimizer.zero_grad()
        self.manual_backward(g_loss)
        generator_optimizer.step()
        return d_loss.detach(), g_loss.detach()

    def _solver_step(self, images: torch.Tensor, labels: torch.Tensor, replay: Replay | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One solver update (:meth:`solver_loss`); returns (segmentation loss, solver loss)."""
        solver_optimizer = self.optimizers()[0]
        seg_loss, solver_loss = self.solver_loss(images, labels, replay)
        solver_optimizer.zero_grad()
        self.manual_backward(solver_loss)
        solver_optimizer.step()
        return seg_loss.detach(), solver_loss.detach()

    def solver_loss(self, images: torch.Tensor, labels: torch.Tensor, replay: Replay | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(segmentation loss, solver loss) on the real pairs (images (N, C, H, W), labels
        (N, H, W)) and the replays (see :meth:`_solver_outputs`), in parts: the real pairs
        (weight 1), then the replays of each earlier site (weight w_s, its replay weight).

        The segmentation loss is the mean of the parts' losses weighted by samples times
        weight: ``(N L_real + sum_s w_s n_s L_s) / (N + sum_s w_s n_s)``. The solver loss adds
        ``distill_weight`` times the distillation towards the old solver, on the replays
        (``distill_on: replays``) or on every image (``batch``, from the first epoch at every
        site after the first), each part's distillation weighted by samples times weight and
        divided by the samples distilled: replays of weight 0.5 distil half as hard."""
        parts = self._solver_outputs(images, labels, replay)
        seg_loss = _sample_weighted([(len(x) * weight, self.loss(logits, y)) for x, y, logits, weight in parts])
        distilled = parts[1:] if self.options.distill_on == "replays" else parts
        if self.old is None or not distilled:
            return seg_loss, seg_loss
        with torch.no_grad():
            teachers = [self.old.solver(x) for x, _, _, _ in distilled]
        distillation = sum(
            len(x) * weight * distillation_loss(teacher, logits, self.options.temperature)
            for (x, _, logits, weight), teacher in zip(distilled, teachers)
        ) / sum(len(x) for x, _, _, _ in distilled)
        return seg_loss, seg_loss + self.options.distill_weight * distillation

    def _solver_outputs(
        self, images: torch.Tensor, labels: torch.Tensor, replay: Replay | None
    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]]:
        """(images, labels, solver logits, weight) of the real pairs (weight 1), then of the
        replays of each earlier site with a positive replay weight, by site code (augmented by
        ``replay_augment``; with ``replay_labels: teacher``, labelled by the old solver's
        segmentation of the augmented images). Replays of the real patches' size share one
        forward pass with them (batch norm sees the mixed batch); replays of another size pass
        on their own, leaving the batch norm's running statistics, which a test normalises real
        images with, as they are."""
        if replay is not None:
            replay = Replay(*(part[self.replay_weights[replay.sites] > 0] for part in replay))
        if replay is None or not len(replay.sites):
            return [(images, labels, self(images), 1.0)]
        replay_images, replay_labels = replay.images, replay.labels
        if self.replay_augment is not None:
            replay_images, replay_labels = self.replay_augment(replay_images, replay_labels)
        if self.options.replay_labels == "teacher":
            with torch.no_grad():
                replay_labels = self.old.solver(replay_images).argmax(1)
        if replay_images.shape[1:] == images.shape[1:]:
            logits, replay_logits = self(torch.cat([images, replay_images])).split([len(images), len(replay_images)])
        else:
            logits = self(images)
            with frozen_running_stats(self.model):
                replay_logits = self(replay_images)
        parts = [(images, labels, logits, 1.0)]
        for code in replay.sites.unique().tolist():
            mine = replay.sites == code
            parts.append((replay_images[mine], replay_labels[mine], replay_logits[mine], float(self.replay_weights[code])))
        return parts

    def _valid(self, labels: torch.Tensor) -> torch.Tensor:
        """Labels with ignored pixels mapped to background (for the generators' one-hot)."""
        return labels if self.ignore_index is None else labels.masked_fill(labels == self.ignore_index, 0)


def replay_count(real: int, share: float, batch: ReplayBatch) -> int:
    """How many replays a stage-2 batch of ``real`` real pairs gets, so that they are about
    ``share`` of the solver's batch: with ``batch="replace"`` they take the place of real pairs
    (at least 1, and at least one real pair left; 0 for a batch of one), with ``"append"``
    they are added (at least 1)."""
    if batch == "append":
        return max(1, round(share / (1 - share) * real))
    return min(real - 1, max(1, round(share * real)))


@contextmanager
def frozen_running_stats(module: nn.Module) -> Iterator[None]:
    """Inside, the batch norm layers of ``module`` normalise by the batch's statistics (in
    training mode) but keep their running statistics, which a test normalises with, unchanged."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(norm.momentum, norm.num_batches_tracked.clone()) for norm in norms]
    for norm in norms:
        norm.momentum = 0.0
    try:
        yield
    finally:
        for norm, (momentum, count) in zip(norms, saved):
            norm.momentum = momentum
            norm.num_batches_tracked.copy_(count)


def _sample_weighted(losses: Sequence[tuple[float, torch.Tensor]]) -> torch.Tensor:
    """The mean of (weighted sample count, loss) pairs' losses weighted by their counts (one: its loss)."""
    if len(losses) == 1:
        return losses[0][1]
    return sum(count * loss for count, loss in losses) / sum(count for count, _ in losses)
