"""The relay strategy: sequential hand-over whose sites train with replay and distillation."""

from __future__ import annotations

import json
import logging
import zlib
from dataclasses import asdict
from typing import Any, Sequence

import torch
from torch import nn

from siteflow.config import SiteConfig, SiteRun
from siteflow.core.atomic import safe_name, write_json
from siteflow.core.registry import STRATEGIES
from siteflow.datasets.pooling import build_dataset
from siteflow.models.generators import MAX_SITES, ImageGenerator, LabelGenerator
from siteflow.models.strokes import StrokeLabelGenerator
from siteflow.privacy.replay_leak import check_replay_leak
from siteflow.strategies.base import SiteInput, SiteTraining, StudyContext, Trainee
from siteflow.strategies.relay.learner import BatchAugment, RelayLearner
from siteflow.strategies.relay.network import RelayNetwork, random_crops
from siteflow.strategies.relay.options import RelayOptions, RelayPosition
from siteflow.strategies.relay.replay_quality import Pairs, ReplayQuality, measure_replay, save_replay_grid
from siteflow.strategies.relay.replay_weights import ReplayWeight, replay_weights
from siteflow.strategies.sequential import SequentialStrategy
from siteflow.tasks import Task

log = logging.getLogger(__name__)

QUALITY_FILE = "replay_quality.json"
WEIGHTS_FILE = "replay_weights.json"


@STRATEGIES.register("relay")
class RelayStrategy(SequentialStrategy):
    """Relay learning.

    Before every site that replays earlier sites, the received generators' replays of each
    earlier site are measured (see :mod:`~siteflow.strategies.relay.replay_quality`): the
    numbers go to the log and to ``results/replay_quality.json`` (by stage, then earlier
    site), the pictures to ``results/replay_<stage>.png``. How much each earlier site's
    replays then count for the solver (``replay_weighting``, see
    :mod:`~siteflow.strategies.relay.replay_weights`), and why, goes to the log and to
    ``results/replay_weights.json`` (by stage, then earlier site: weight, quality, what the
    quality is).

    Args:
        cycles: passes over the site order.
        options: the fields of :class:`RelayOptions` (generator sizes, replay size and
            fraction, distillation, GAN training, merge, quality measurement).
    """

    options_class = RelayOptions
    supports_dp_sgd = False  # its site steps train generators and replay: not standard training steps

    def __init__(self, cycles: int = 1, **options: Any) -> None:
        super().__init__(cycles)
        self.options = RelayOptions(**options)

    def build_network(self, task: Task) -> RelayNetwork:
        """The solver with the label and image generators; ValueError (a config error at
        ``common.strategy`` while the config is validated) for a task without label maps."""
        if not task.label_maps:
            raise ValueError(
                f"relay replays (label map, image) pairs of the earlier sites, and this study's task "
                f"({type(task).__name__}) has no label maps: relay does not replay image-level classes; "
                "choose sequential, lwf, ewc, si or a federated strategy"
            )
        size = self.options.replay_side(solver_input_size(task))
        num_classes = len(task.class_names)
        options = self.options
        return RelayNetwork(
            task.build_model(),
            self.build_label_generator(task.class_names, size),
            ImageGenerator(num_classes, task.in_channels, size, z_dim=options.z_dim, channels=options.image_generator_channels),
        )

    def build_label_generator(self, class_names: Sequence[str], size: int) -> LabelGenerator | StrokeLabelGenerator:
        """The label generator ``label_generator`` names, drawing maps of side ``size``;
        ValueError naming the option when strokes are asked for more than two classes."""
        options = self.options
        if options.label_generator == "convolutional":
            return LabelGenerator(len(class_names), size, z_dim=options.z_dim, channels=options.label_generator_channels)
        if len(class_names) != 2:
            raise ValueError(
                f"common.strategy.kwargs.label_generator: 'strokes' draws binary label maps (background and one "
                f"structure), and this task has {len(class_names)} classes {list(class_names)}: use 'convolutional'"
            )
        return StrokeLabelGenerator(2, size, z_dim=options.z_dim, strokes=options.strokes)

    def make_learner(
        self,
        context: SiteTraining,
        network: nn.Module,
        site_runs: Sequence[SiteRun],
        carried: SiteInput,
        replay_weights: dict[int, float] | None = None,
    ) -> RelayLearner:
        """The learner of the site of ``site_runs``; ``replay_weights``: earlier site code -> how
        much its replays count (None: 1 each)."""
        (site,) = site_runs
        task = context.task
        return RelayLearner(
            network,
            task.build_loss(site.train, [site.site]),
            train=site.train,
            class_names=task.class_names,
            ignore_index=task.ignore_index,
            in_channels=task.in_channels,
            replay_size=self.options.replay_side(solver_input_size(task)),
            position=self.position(context, site, carried),
            options=self.options,
            replay_augment=self.replay_augmentation(site),
            replay_weights=replay_weights,
        )

    def replay_augmentation(self, site: SiteRun) -> BatchAugment | None:
        """The augmentation of ``site``'s training images, applied to the replays the solver
        sees (None when the site augments nothing), drawing from the global random stream
        (seeded, and saved with every checkpoint)."""
        augmentation = build_dataset(site.site, "train").label_map_augmentation
        if augmentation is None:
            return None
        return lambda images, labels: augmentation.batch(images, labels, torch.default_generator)

    def position(self, context: SiteTraining, site: SiteRun, carried: SiteInput) -> RelayPosition:
        """``site``'s place in the relay: codes by first appearance in the received chain,
        sample counts from the chain."""
        codes = site_codes(carried)
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

    def run(self, context: StudyContext) -> None:
        """Sequential's relay, with the replay quality measured before every site."""
        solver = self.solver_from(context.task)
        carried = context.start(context.site_runs[0], lambda: self.build_network(context.task), site_order=self.relay_order(context))
        for stage, save_dir, site in self.stages(context):
            qualities = self.measure_replays(context, stage, site, carried)
            counted = {weight.code: weight.weight for weight in self.weigh_replays(context, stage, site, carried, qualities)}
            trainee = Trainee(
                lambda: self.build_network(context.task),
                lambda network, site=site, carried=carried, counted=counted: self.make_learner(context, network, [site], carried, replay_weights=counted),
            )
            weights = context.fit(stage, [site], carried.weights, trainee, save_dir=save_dir)
            carried = SiteInput(weights, carried.sites + (context.site_record(site),))
            context.hand_over(carried, save_dir=save_dir)
            context.test(stage, weights, solver, trained_site=site.task_name)

    def weigh_replays(
        self, context: StudyContext, stage: str, site: SiteRun, carried: SiteInput, qualities: dict[int, ReplayQuality]
    ) -> list[ReplayWeight]:
        """How much the replays of every site before ``site`` count at ``stage``, from their
        measured ``qualities`` (code -> quality); logged, and written into the run's results."""
        names = {code: self.site_name(context, task_id) for task_id, code in self.earlier_codes(site, carried).items()}
        weights = replay_weights(self.options, qualities, names)
        if not weights:
            return []
        for weight in weights:
            log.info("stage %s: %s", stage, weight.summary())
        path = context.result_path(WEIGHTS_FILE)
        written = json.loads(path.read_text()) if path.is_file() else {}
        written[stage] = {weight.site: asdict(weight) for weight in weights}
        write_json(path, written)
        return weights

    @staticmethod
    def earlier_codes(site: SiteRun, carried: SiteInput) -> dict[int, int]:
        """Task id -> generator code of every site of the received chain other than ``site``."""
        return {task_id: code for task_id, code in site_codes(carried).items() if task_id != site.task_id}

    @staticmethod
    def site_name(context: SiteTraining, task_id: int) -> str:
        """The name of the site of ``task_id`` (``task <id>`` for a site the config does not list)."""
        sites = {s.task_id: s for s in context.config.sites}
        return sites[task_id].task_name if task_id in sites else f"task {task_id}"

    def measure_replays(self, context: StudyContext, stage: str, site: SiteRun, carried: SiteInput) -> dict[int, ReplayQuality]:
        """Measure how the generators of ``carried`` replay every site before ``site``, against
        real training pairs of those whose data is here (seeded by the run's seed and the
        stage, so a resumed run measures the same); log the numbers and write them with a
        picture into the run's results. Returns generator code -> quality (empty when not
        measured); a stage measured before is read back, not measured again."""
        samples = self.options.quality_samples
        earlier = self.earlier_codes(site, carried)
        numbers_path = context.result_path(QUALITY_FILE)
        measured = json.loads(numbers_path.read_text()) if numbers_path.is_file() else {}
        if not samples or not earlier:
            return {}
        if stage in measured:
            return {code: ReplayQuality(**measured[stage][self.site_name(context, task_id)]) for task_id, code in earlier.items()}
        task = context.task
        network = self.build_network(task)
        network.load_state_dict(carried.weights)
        network.eval()
        side = self.options.replay_side(solver_input_size(task))
        generator = torch.Generator().manual_seed(context.config.seed + zlib.crc32(stage.encode()))
        sites = {s.task_id: s for s in context.config.sites}
        qualities, pictures = [], []
        for task_id, code in earlier.items():
            name = self.site_name(context, task_id)
            replay = network.replay(torch.full((samples,), code, dtype=torch.long), len(task.class_names), generator=generator)
            real = _real_pairs(task, sites[task_id], samples, side, generator) if task_id in sites else None
            quality = measure_replay(name, network.solver, replay, real, num_classes=len(task.class_names), ignore_index=task.ignore_index)
            log.info("stage %s: replay of %s", stage, quality.summary())
            qualities.append(quality)
            pictures.append((name, replay, real))
        measured[stage] = {quality.site: asdict(quality) for quality in qualities}
        save_replay_grid(
            context.result_path(f"replay_{safe_name(stage)}.png"), pictures, len(task.class_names),
            title=f"before {stage}: real (training) and replayed pairs of the earlier sites",
        )
        replays = [(sites[t], replay[0]) for t, (_, replay, _) in zip(earlier, pictures) if t in sites]  # images of the sites here
        check_replay_leak(task, stage, replays, seed=context.config.seed, result_path=context.result_path)
        write_json(numbers_path, measured)
        return dict(zip(earlier.values(), qualities))


def site_codes(carried: SiteInput) -> dict[int, int]:
    """Task id -> generator code of every site in the received chain (first appearance)."""
    codes: dict[int, int] = {}
    for record in carried.sites:
        codes.setdefault(record.task_id, len(codes))
    return codes


def solver_input_size(task: Task) -> tuple[int, ...] | None:
    """The (H, W) of what the solver trains on: the first site's training patches when it cuts
    some, else its images' size (None: native sizes)."""
    spec = task.specs[task.config.sites[0].task_name]
    return spec.patch_size or spec.image_size


def _real_pairs(task: Task, site: SiteConfig, count: int, side: int, generator: torch.Generator) -> Pairs | None:
    """Up to ``count`` real (image, label) pairs of ``site``'s training split as the solver
    sees them unaugmented, drawn at random and each cropped at random to ``side`` x ``side``;
    None when the site's data is not here or has fewer than two samples (diversity compares
    pairs)."""
    if not site.available:
        return None
    data = task.dataset([site], "train")
    if data.num_samples < 2:
        return None
    items = [data[index] for index in torch.randperm(data.num_samples, generator=generator)[:count].tolist()]
    crops = [random_crops(item["image"][None], item["label"][None], side, generator=generator) for item in items]
    return torch.cat([image for image, _ in crops]), torch.cat([label for _, label in crops])
