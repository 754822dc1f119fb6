"""Relay learning's options, and where a site stands in the relay."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RelayOptions:
    """The options of ``strategy: relay`` (``common.strategy.kwargs``), checked on creation.

    Attributes:
        z_dim: noise size of both generators.
        label_generator_channels, image_generator_channels, discriminator_channels: widths.
        replay_fraction: share of every stage-2 batch replaced by replay (0.5: half).
        distill_weight, temperature: distillation towards the old solver on replayed images.
        image_l1_weight: weight of the image generator's reconstruction term.
        gan_lr: Adam learning rate of generators and discriminators.
    """

    z_dim: int = 64
    label_generator_channels: int = 128
    image_generator_channels: int = 32
    discriminator_channels: int = 32
    replay_fraction: float = 0.5
    distill_weight: float = 0.5
    temperature: float = 2.0
    image_l1_weight: float = 10.0
    gan_lr: float = 2e-4

    def __post_init__(self) -> None:
        if not 0.0 < self.replay_fraction < 1.0:
            raise ValueError(f"replay_fraction must be in (0, 1), got {self.replay_fraction}")


@dataclass(frozen=True)
class RelayPosition:
    """Where a site stands in the relay, read from the received chain of sites.

    Attributes:
        site_code: this site's generator code (its position of first appearance in the chain).
        previous_codes: codes of the sites seen before, sorted.
        samples_before: M, training samples seen by the received network.
        samples_here: n_k, this site's training samples.
        midpoint_epoch: the epoch at whose start the merge happens and stage 2 begins.
    """

    site_code: int
    previous_codes: tuple[int, ...]
    samples_before: int
    samples_here: int
    midpoint_epoch: int
