"""The relay learner: generators, discriminators and solver trained together at one site."""

from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from siteflow.config import TrainConfig
from siteflow.losses import distillation_loss
from siteflow.models.generators import ProjectionDiscriminator
from siteflow.strategies.base import SetupRefused
from siteflow.strategies.relay.network import RelayNetwork, merge_by_samples
from siteflow.strategies.relay.options import RelayOptions, RelayPosition
from siteflow.tasks import SegmentationLearner
from siteflow.tasks.base import Batch


class RelayLearner(SegmentationLearner):
    """Trains the solver and the generators at one site (Lightning manual optimisation).

    Args:
        network: the received network (solver and generators), trained in place.
        loss: the segmentation loss.
        train, class_names, ignore_index: as for the segmentation learner.
        in_channels, image_size: the images' channels and (square) side.
        position: this site's place in the relay (codes, sample counts, midpoint).
        options: the relay options.
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
        image_size: int,
        position: RelayPosition,
        options: RelayOptions,
    ) -> None:
        super().__init__(network.solver, loss, train=train, class_names=class_names, ignore_index=ignore_index)
        self.automatic_optimization = False
        self.label_generator = network.label_generator
        self.image_generator = network.image_generator
        num_classes = len(class_names)
        self.label_discriminator = ProjectionDiscriminator(num_classes, image_size, channels=options.discriminator_channels)
        self.image_discriminator = ProjectionDiscriminator(
            in_channels + num_classes, image_size, channels=options.discriminator_channels
        )
        self.old = copy.deepcopy(network).eval().requires_grad_(False) if position.previous_codes else None
        self.register_buffer("merged", torch.tensor(False))
        self.register_buffer("previous_codes", torch.tensor(list(position.previous_codes), dtype=torch.long))
        self.position = position
        self.options = options
        self.num_classes = num_classes

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
            network = RelayNetwork(self.model, self.label_generator, self.image_generator)
            if self.old is not None:
                merge_by_samples(network, self.old, self.position.samples_here, self.position.samples_before)
            self.merged.fill_(True)

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        solver_optimizer, generator_optimizer, discriminator_optimizer = self.optimizers()
        images, labels = batch["image"], batch["label"]
        sites = torch.full((len(images),), self.position.site_code, device=images.device, dtype=torch.long)
        replayed = 0
        if self.old is not None and self.merged and len(images) > 1:
            replayed = max(1, round(self.options.replay_fraction * len(images)))
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
            + self.options.image_l1_weight * F.l1_loss(fake_images, images)
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
            solver_loss = solver_loss + self.options.distill_weight * distillation_loss(teacher, logits[-replayed:], self.options.temperature)
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
            [*self.label_generator.parameters(), *self.image_generator.parameters()], lr=self.options.gan_lr, betas=(0.5, 0.999)
        )
        discriminators = torch.optim.Adam(
            [*self.label_discriminator.parameters(), *self.image_discriminator.parameters()], lr=self.options.gan_lr, betas=(0.5, 0.999)
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
