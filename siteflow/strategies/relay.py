"""relay: sequential hand-over with knowledge retention by generative replay and distillation.

After Bo et al., "Relay Learning", npj Digital Medicine 6:204 (2023). The model travels from
site to site (as a hand-over file between offline hospitals) together with two conditional
generators: one draws label maps of a site, the other renders an image of a site from a label
map. At site ``k``:

1. a frozen copy of everything received is kept (the *old* networks);
2. stage 1, the first half of the site's epochs: generators, fresh discriminators and the
   solver train on site ``k``'s real data, the generators conditioned on site ``k``'s code;
3. midpoint: every travelling network is averaged with its old copy by sample counts,
   ``theta = (n_k * theta + M * theta_old) / (M + n_k)`` (M: samples seen before);
4. stage 2: a fraction of every batch (half by default) is replay from the *old* generators
   for earlier sites drawn uniformly; the generators learn from real and replayed data, and
   the solver from both plus distillation towards the *old* solver's soft predictions on the
   replayed images (the reference code distilled from the current solver, a no-op).

Site codes are positions in the chain of the hand-over (first appearance), so they need no
coordination; the sample counts come from the chain too.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from siteflow.config import TaskConfig, TrainConfig
from siteflow.tasks.learner import Batch, SegmentationLearner
from siteflow.losses import distillation_loss
from siteflow.models.generators import MAX_SITES, ImageGenerator, LabelGenerator, ProjectionDiscriminator
from siteflow.core.registry import STRATEGIES
from siteflow.strategies.base import Carried, SiteRunner
from siteflow.strategies.sequential import SequentialStrategy


class RelayNetwork(nn.Module):
    """What travels: the segmentation solver and the two conditional generators."""

    def __init__(self, solver: nn.Module, label_generator: LabelGenerator, image_generator: ImageGenerator) -> None:
        super().__init__()
        self.solver = solver
        self.label_generator = label_generator
        self.image_generator = image_generator

    @torch.no_grad()
    def replay(self, sites: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Generate (images (N, C_in, S, S), labels (N, S, S) int64) of the given site codes (N,)."""
        z_label = torch.randn(len(sites), self.label_generator.z_dim, device=sites.device)
        labels = self.label_generator(z_label, sites).argmax(dim=1)
        z_image = torch.randn(len(sites), self.label_generator.z_dim, device=sites.device)
        images = self.image_generator(z_image, sites, F.one_hot(labels, num_classes).movedim(-1, 1).float())
        return images, labels


@torch.no_grad()
def merge_by_samples(network: nn.Module, old: nn.Module, samples_here: int, samples_before: int) -> None:
    """``theta = (n * theta + M * theta_old) / (M + n)`` for every float parameter and buffer."""
    if samples_before == 0:
        return
    weight_old = samples_before / (samples_before + samples_here)
    old_state = old.state_dict()
    for name, tensor in network.state_dict().items():
        if tensor.is_floating_point():
            tensor.lerp_(old_state[name].to(tensor.device), weight_old)


class RelayLearner(SegmentationLearner):
    """Trains the solver and the generators at one site (Lightning manual optimisation).

    Args:
        network: the received network (solver and generators), trained in place.
        loss: the segmentation loss.
        site_code: this site's code; ``previous_codes``: codes of the earlier sites.
        samples_before: M, training samples seen by the received network; ``samples_here``: n_k.
        midpoint_epoch: the epoch at whose start the merge happens and stage 2 begins.
    """

    def __init__(
        self,
        network: RelayNetwork,
        loss: nn.Module,
        *,
        train: TrainConfig,
        class_names: Sequence[str],
        ignore_index: int | None,
        site_code: int,
        previous_codes: Sequence[int],
        samples_before: int,
        samples_here: int,
        midpoint_epoch: int,
        in_channels: int,
        image_size: int,
        replay_fraction: float,
        distill_weight: float,
        temperature: float,
        image_l1_weight: float,
        gan_lr: float,
        discriminator_channels: int,
    ) -> None:
        super().__init__(network.solver, loss, train=train, class_names=class_names, ignore_index=ignore_index)
        self.automatic_optimization = False
        self.label_generator = network.label_generator
        self.image_generator = network.image_generator
        num_classes = len(class_names)
        self.label_discriminator = ProjectionDiscriminator(num_classes, image_size, channels=discriminator_channels)
        self.image_discriminator = ProjectionDiscriminator(in_channels + num_classes, image_size, channels=discriminator_channels)
        self.old = copy.deepcopy(network).eval().requires_grad_(False) if previous_codes else None
        self.register_buffer("merged", torch.tensor(False))
        self.site_code = site_code
        self.register_buffer("previous_codes", torch.tensor(list(previous_codes), dtype=torch.long))
        self.samples_before, self.samples_here = samples_before, samples_here
        self.midpoint_epoch = midpoint_epoch
        self.replay_fraction = replay_fraction
        self.distill_weight, self.temperature = distill_weight, temperature
        self.image_l1_weight = image_l1_weight
        self.gan_lr = gan_lr
        self.num_classes = num_classes

    def train(self, mode: bool = True) -> "RelayLearner":
        super().train(mode)
        if self.old is not None:
            self.old.eval()  # the old networks stay frozen, batch norm statistics included
        return self

    def on_train_epoch_start(self) -> None:
        if self.current_epoch >= self.midpoint_epoch and not self.merged:
            network = RelayNetwork(self.model, self.label_generator, self.image_generator)
            if self.old is not None:
                merge_by_samples(network, self.old, self.samples_here, self.samples_before)
            self.merged.fill_(True)

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        solver_optimizer, generator_optimizer, discriminator_optimizer = self.optimizers()
        images, labels = batch["image"], batch["label"]
        sites = torch.full((len(images),), self.site_code, device=images.device, dtype=torch.long)
        replayed = 0
        if self.old is not None and self.merged and len(images) > 1:
            replayed = max(1, round(self.replay_fraction * len(images)))
            old_sites = self.previous_codes[torch.randint(len(self.previous_codes), (replayed,), device=images.device)]
            replay_images, replay_labels = self.old.replay(old_sites, self.num_classes)
            keep = len(images) - replayed
            images = torch.cat([images[:keep], replay_images])
            labels = torch.cat([labels[:keep], replay_labels])
            sites = torch.cat([sites[:keep], old_sites])
        one_hot = F.one_hot(self._valid(labels), self.num_classes).movedim(-1, 1).float()

        # discriminators: real (and replayed) label maps and image/label pairs against generated ones
        fake_labels, fake_images = self._generate(sites, one_hot)
        d_loss = (
            F.softplus(-self.label_discriminator(one_hot, sites)).mean()
            + F.softplus(self.label_discriminator(fake_labels.detach(), sites)).mean()
            + F.softplus(-self.image_discriminator(torch.cat([images, one_hot], 1), sites)).mean()
            + F.softplus(self.image_discriminator(torch.cat([fake_images.detach(), one_hot], 1), sites)).mean()
        )
        discriminator_optimizer.zero_grad()
        self.manual_backward(d_loss)
        discriminator_optimizer.step()

        # generators: fool the discriminators; the image generator also reconstructs the image
        # that belongs to the label map (pairs are known for real and replayed data)
        g_loss = (
            F.softplus(-self.label_discriminator(fake_labels, sites)).mean()
            + F.softplus(-self.image_discriminator(torch.cat([fake_images, one_hot], 1), sites)).mean()
            + self.image_l1_weight * F.l1_loss(fake_images, images)
        )
        generator_optimizer.zero_grad()
        self.manual_backward(g_loss)
        generator_optimizer.step()

        # solver: real and replayed data, plus distillation towards the old solver on replays
        logits = self(images)
        seg_loss = self.loss(logits, labels)
        solver_loss = seg_loss
        if replayed:
            with torch.no_grad():
                teacher = self.old.solver(images[-replayed:])
            solver_loss = solver_loss + self.distill_weight * distillation_loss(teacher, logits[-replayed:], self.temperature)
        solver_optimizer.zero_grad()
        self.manual_backward(solver_loss)
        solver_optimizer.step()

        size = len(images)
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
            [*self.label_generator.parameters(), *self.image_generator.parameters()], lr=self.gan_lr, betas=(0.5, 0.999)
        )
        discriminators = torch.optim.Adam(
            [*self.label_discriminator.parameters(), *self.image_discriminator.parameters()], lr=self.gan_lr, betas=(0.5, 0.999)
        )
        if isinstance(solver, dict):
            return [solver["optimizer"], generators, discriminators], [solver["lr_scheduler"]]
        return [solver, generators, discriminators]

    def _generate(self, sites: torch.Tensor, real_one_hot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Generated label maps (hard one-hot with straight-through gradients) and images
        rendered from the real label maps."""
        z_label = torch.randn(len(sites), self.label_generator.z_dim, device=sites.device)
        fake_labels = F.gumbel_softmax(self.label_generator(z_label, sites), tau=1.0, hard=True, dim=1)
        z_image = torch.randn(len(sites), self.label_generator.z_dim, device=sites.device)
        return fake_labels, self.image_generator(z_image, sites, real_one_hot)

    def _valid(self, labels: torch.Tensor) -> torch.Tensor:
        """Labels with ignored pixels mapped to background (for the generators' one-hot)."""
        return labels if self.ignore_index is None else labels.masked_fill(labels == self.ignore_index, 0)


@STRATEGIES.register("relay")
class RelayStrategy(SequentialStrategy):
    """Relay learning; options: generator sizes, replay fraction, distillation, GAN learning rate.

    Args:
        cycles: passes over the site order.
        z_dim: noise size of both generators.
        label_generator_channels, image_generator_channels, discriminator_channels: widths.
        replay_fraction: share of every stage-2 batch replaced by replay (0.5: half).
        distill_weight, temperature: distillation towards the old solver on replayed images.
        image_l1_weight: weight of the image generator's reconstruction term.
        gan_lr: Adam learning rate of generators and discriminators.
    """

    def __init__(
        self,
        cycles: int = 1,
        *,
        z_dim: int = 64,
        label_generator_channels: int = 128,
        image_generator_channels: int = 32,
        discriminator_channels: int = 32,
        replay_fraction: float = 0.5,
        distill_weight: float = 0.5,
        temperature: float = 2.0,
        image_l1_weight: float = 10.0,
        gan_lr: float = 2e-4,
    ) -> None:
        super().__init__(cycles)
        if not 0.0 < replay_fraction < 1.0:
            raise ValueError(f"replay_fraction must be in (0, 1), got {replay_fraction}")
        self.z_dim = z_dim
        self.label_generator_channels = label_generator_channels
        self.image_generator_channels = image_generator_channels
        self.discriminator_channels = discriminator_channels
        self.replay_fraction = replay_fraction
        self.distill_weight = distill_weight
        self.temperature = temperature
        self.image_l1_weight = image_l1_weight
        self.gan_lr = gan_lr

    def build_network(self, runner: SiteRunner) -> RelayNetwork:
        size = _square_side(runner.image_size)
        num_classes = len(runner.class_names)
        return RelayNetwork(
            runner.build_model(),
            LabelGenerator(num_classes, size, z_dim=self.z_dim, channels=self.label_generator_channels),
            ImageGenerator(num_classes, runner.in_channels, size, z_dim=self.z_dim, channels=self.image_generator_channels),
        )

    def make_learner(
        self, runner: SiteRunner, network: nn.Module, tasks: Sequence[TaskConfig], carried: Carried
    ) -> RelayLearner:
        (task,) = tasks
        codes: dict[int, int] = {}
        for record in carried.sites:
            codes.setdefault(record.task_id, len(codes))
        site_code = codes.setdefault(task.task_id, len(codes))
        if len(codes) > MAX_SITES:
            raise ValueError(f"relay supports at most {MAX_SITES} sites, this chain has {len(codes)}")
        train = task.train
        return RelayLearner(
            network,
            runner.build_loss(train, tasks),
            train=train,
            class_names=runner.class_names,
            ignore_index=runner.ignore_index,
            site_code=site_code,
            previous_codes=sorted(set(codes.values()) - {site_code}),
            samples_before=sum(record.num_samples for record in carried.sites),
            samples_here=runner.site_record(task).num_samples,
            midpoint_epoch=train.epochs // 2,
            in_channels=runner.in_channels,
            image_size=_square_side(runner.image_size),
            replay_fraction=self.replay_fraction,
            distill_weight=self.distill_weight,
            temperature=self.temperature,
            image_l1_weight=self.image_l1_weight,
            gan_lr=self.gan_lr,
            discriminator_channels=self.discriminator_channels,
        )

    def solver(self, network: nn.Module) -> nn.Module:
        return network.solver


def _square_side(image_size: Sequence[int]) -> int:
    if len(image_size) != 2 or image_size[0] != image_size[1]:
        raise ValueError(f"relay needs square 2D images (set the dataset's img_size), got size {tuple(image_size)}")
    return image_size[0]
