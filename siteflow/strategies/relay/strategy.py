"""The relay strategy: sequential hand-over whose sites train with replay and distillation."""

from __future__ import annotations

from typing import Any, Sequence

from torch import nn

from siteflow.config import TaskConfig
from siteflow.core.registry import STRATEGIES
from siteflow.models.generators import MAX_SITES, ImageGenerator, LabelGenerator
from siteflow.strategies.base import Carried, StudyContext
from siteflow.strategies.relay.learner import RelayLearner
from siteflow.strategies.relay.network import RelayNetwork
from siteflow.strategies.relay.options import RelayOptions, RelayPosition
from siteflow.strategies.sequential import SequentialStrategy
from siteflow.tasks import Task


@STRATEGIES.register("relay")
class RelayStrategy(SequentialStrategy):
    """Relay learning.

    Args:
        cycles: passes over the site order.
        options: the fields of :class:`RelayOptions` (generator sizes, replay fraction,
            distillation, GAN learning rate).
    """

    options_class = RelayOptions

    def __init__(self, cycles: int = 1, **options: Any) -> None:
        super().__init__(cycles)
        self.options = RelayOptions(**options)

    def build_network(self, task: Task) -> RelayNetwork:
        size = square_side(task.image_size)
        num_classes = len(task.class_names)
        options = self.options
        return RelayNetwork(
            task.build_model(),
            LabelGenerator(num_classes, size, z_dim=options.z_dim, channels=options.label_generator_channels),
            ImageGenerator(num_classes, task.in_channels, size, z_dim=options.z_dim, channels=options.image_generator_channels),
        )

    def make_learner(
        self, context: StudyContext, network: nn.Module, tasks: Sequence[TaskConfig], carried: Carried
    ) -> RelayLearner:
        (site,) = tasks
        task = context.task
        return RelayLearner(
            network,
            task.build_loss(site.train, [site.site]),
            train=site.train,
            class_names=task.class_names,
            ignore_index=task.ignore_index,
            in_channels=task.in_channels,
            image_size=square_side(task.image_size),
            position=self.position(context, site, carried),
            options=self.options,
        )

    def position(self, context: StudyContext, site: TaskConfig, carried: Carried) -> RelayPosition:
        """``site``'s place in the relay: codes by first appearance in the received chain,
        sample counts from the chain."""
        codes: dict[int, int] = {}
        for record in carried.sites:
            codes.setdefault(record.task_id, len(codes))
        site_code = codes.setdefault(site.task_id, len(codes))
        if len(codes) > MAX_SITES:
            raise ValueError(f"relay supports at most {MAX_SITES} sites, this chain has {len(codes)}")
        return RelayPosition(
            site_code=site_code,
            previous_codes=tuple(sorted(set(codes.values()) - {site_code})),
            samples_before=sum(record.num_samples for record in carried.sites),
            samples_here=context.sample_count(site),
            midpoint_epoch=site.train.epochs // 2,
        )

    def solver(self, network: nn.Module) -> nn.Module:
        return network.solver


def square_side(image_size: Sequence[int] | None) -> int:
    """The side of square 2D images; relay's generators draw square images."""
    if image_size is None or len(image_size) != 2 or image_size[0] != image_size[1]:
        raise ValueError(f"relay needs square 2D images (set the dataset's img_size), got size {image_size}")
    return image_size[0]
