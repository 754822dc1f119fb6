"""Relay learning's options, and where a site stands in the relay."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from siteflow.models.generators import check_size
from siteflow.strategies.relay.adversarial import AUGMENT_OPS, AugmentOp

MergeKind = Literal["samples", "quality", "none"]
DistillOn = Literal["replays", "batch"]
ReplayBatch = Literal["replace", "append"]
ReplayLabels = Literal["generated", "teacher"]
LabelGeneratorKind = Literal["convolutional", "strokes"]
ReplayWeighting = Literal["quality", "uniform"]


@dataclass(frozen=True)
class RelayOptions:
    """The options of ``strategy: relay`` (``common.strategy.kwargs``), checked on creation."""

    z_dim: int = 64
    """Size of the noise vector of both generators (label and image), positive."""
    label_generator: LabelGeneratorKind = "convolutional"
    """How label maps are drawn: ``"convolutional"`` (a DCGAN generator, for any classes) or
    ``"strokes"`` (binary maps of thin curvilinear structures such as vessels, drawn as the
    union of ``strokes`` learnt curves; see :class:`~siteflow.models.strokes.StrokeLabelGenerator`)."""
    strokes: int = 8
    """The most curves a stroke label map has (``label_generator: strokes`` only), positive."""
    label_generator_channels: int = 128
    """Width of the convolutional label generator: its feature channels at 4x4, halved at every
    upsampling (at least 16); unused by ``label_generator: strokes``."""
    image_generator_channels: int = 32
    """Width of the image generator: its feature channels at full resolution, doubled at every
    coarser level (up to 8x)."""
    discriminator_channels: int = 32
    """Width of both discriminators (label maps, and image with label map): their channels after
    the first downsampling, doubled at every next one (up to 256)."""
    replay_size: int | None = None
    """Side of the replayed (image, label map) patches, a power of two >= 16 no larger than the
    solver's input; the generators learn from random crops of that side. None: the solver's
    input side (which must then be such a power of two)."""
    replay_fraction: float = 0.5
    """Share of replays in the solver's every stage-2 batch, in (0, 1) (0.5: half); see
    ``replay_batch``."""
    replay_batch: ReplayBatch = "replace"
    """How replays enter a batch of B real pairs: ``"replace"`` (the reference's default:
    replays take the place of ``replay_fraction`` of them, so a later site learns from fewer
    real pairs per step than the first) or ``"append"`` (all B real pairs stay, and
    ``B * replay_fraction / (1 - replay_fraction)`` replays are added)."""
    replay_labels: ReplayLabels = "generated"
    """The label maps the solver learns a replayed image with: ``"generated"`` (the label
    generator's map the image was drawn from, as the reference does) or ``"teacher"`` (the old
    solver's segmentation of the replayed image: the replay then teaches what the old solver
    knew even where the image generator does not render its map, or the label generator draws
    maps unlike the site's)."""
    distill_weight: float = 0.5
    """Weight, >= 0, of the distillation towards the old solver (on ``distill_on``) added to the
    solver's segmentation loss; 0: no distillation."""
    temperature: float = 2.0
    """Softening temperature, positive, of the distillation's class distributions (the loss is
    scaled by its square, as in Hinton et al.)."""
    distill_on: DistillOn = "replays"
    """The images the solver is distilled on: ``"replays"`` (the replayed ones, in stage 2) or
    ``"batch"`` (every image it learns at a site after the first, real and replayed, from the
    first epoch: what the reference's solver loss means to do, whose teacher is the current
    solver by a bug)."""
    image_l1_weight: float = 10.0
    """Weight, >= 0, of the L1 loss between the image generator's rendering of a real label map
    and the real image it belongs to (averaged over each class's pixels, then over the
    classes, so that thin vessels count as much as the background), added to the generators'
    adversarial loss."""
    gan_lr: float = 2e-4
    """Adam learning rate (betas 0.5, 0.999) of the generators and the discriminators; the
    solver keeps the optimizer of ``common.train``."""
    d_augment: tuple[AugmentOp, ...] = AUGMENT_OPS
    """DiffAugment transforms applied to every discriminator input, distinct names of
    ``"color"``, ``"translation"`` and ``"cutout"`` (default: all three); empty: none."""
    r1_gamma: float = 0.1
    """Weight gamma, >= 0, of the R1 penalty ``gamma / 2 * E ||grad D(x)||^2`` on the
    discriminators' real inputs; 0: none."""
    r1_interval: int = 4
    """R1 is computed every this many steps, scaled by it (lazy regularisation); 1: every step."""
    mode_seeking: float = 0.1
    """Weight, >= 0, of the label generator's mode-seeking term (MSGAN), which keeps different
    noises from drawing the same label map; 0: none."""
    image_mode_seeking: float = 1.0
    """Weight, >= 0, of the image generator's mode-seeking term (MSGAN, whose weight 1 is the
    paper's for image-to-image translation), which keeps different noises from rendering one
    label map as the same image (the L1 towards the real image alone pulls every noise to one
    mean image: a flat background); 0: none."""
    merge: MergeKind = "samples"
    """The midpoint merge with the received networks, at the start of stage 2: ``"samples"``
    (the reference's ``theta = (n_k theta + M theta_old) / (M + n_k)``, n_k this site's
    training samples, M those seen before), ``"quality"`` (the same, the old share
    ``M / (M + n_k)`` times the mean replay weight of the earlier sites: the merge keeps the
    received weights only as far as the replays that are to hold them in stage 2 count;
    nothing when no replay counts, the reference's share when all count fully) or ``"none"``
    (keep the weights as trained)."""
    quality_samples: int = 16
    """Replays (and real crops) per earlier site with which replay quality is measured before
    every site; 0: not measured, else at least 2."""
    replay_weighting: ReplayWeighting = "uniform"
    """How much each earlier site's replays count for the solver: ``"quality"`` (by the replay
    quality measured before the site, see :mod:`~siteflow.strategies.relay.replay_weights`: the
    previous solver's Dice on the site's replays over its Dice on real patches of the site, or,
    where no real data of it is here, the Dice agreement between the previous solver's
    segmentation of a replay and the replayed label map; mapped to a weight in [0, 1] that
    scales the replays' segmentation loss and distillation, and, with ``replay_batch:
    replace``, how many real pairs they take the place of) or ``"uniform"`` (every replay
    counts fully, as in the reference: the default while ``"quality"`` is measured over seeds).
    ``"quality"`` needs ``quality_samples`` >= 2."""
    quality_floor: float = 0.5
    """Replay quality in [0, 1) at or below which a site's replays count nothing
    (``replay_weighting: quality``); the weight rises linearly from 0 there to 1 at
    ``quality_full``."""
    quality_full: float = 0.9
    """Replay quality in (``quality_floor``, 1] from which a site's replays count fully
    (``replay_weighting: quality``): 0.9 for replays the previous solver segments within a
    tenth of how it segments real patches."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "d_augment", tuple(self.d_augment))  # a YAML list
        if not 0.0 < self.replay_fraction < 1.0:
            raise ValueError(f"replay_fraction must be in (0, 1), got {self.replay_fraction}")
        positive = {
            "z_dim": self.z_dim,
            "strokes": self.strokes,
            "label_generator_channels": self.label_generator_channels,
            "image_generator_channels": self.image_generator_channels,
            "discriminator_channels": self.discriminator_channels,
            "temperature": self.temperature,
            "gan_lr": self.gan_lr,
            "r1_interval": self.r1_interval,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        for name, value in {"distill_weight": self.distill_weight, "image_l1_weight": self.image_l1_weight, "r1_gamma": self.r1_gamma,
                            "mode_seeking": self.mode_seeking, "image_mode_seeking": self.image_mode_seeking}.items():
            if not value >= 0:
                raise ValueError(f"{name} must be non-negative, got {value}")
        if self.replay_size is not None and not _is_generator_side(self.replay_size):
            raise ValueError(f"replay_size must be a power of two >= 16 (the generators' sides), got {self.replay_size}")
        unknown = [op for op in self.d_augment if op not in AUGMENT_OPS]
        if unknown or len(set(self.d_augment)) != len(self.d_augment):
            raise ValueError(f"d_augment must list distinct transforms of {list(AUGMENT_OPS)}, got {list(self.d_augment)}")
        for name, kind in (("merge", MergeKind), ("replay_batch", ReplayBatch), ("replay_labels", ReplayLabels), ("distill_on", DistillOn),
                           ("label_generator", LabelGeneratorKind), ("replay_weighting", ReplayWeighting)):
            value, choices = getattr(self, name), get_args(kind)
            if value not in choices:
                listed = ", ".join(map(repr, choices[:-1])) + f" or {choices[-1]!r}"
                raise ValueError(f"{name} must be {listed}, got {value!r}")
        if self.quality_samples == 1 or self.quality_samples < 0:
            raise ValueError(f"quality_samples must be 0 (off) or at least 2 (diversity compares pairs), got {self.quality_samples}")
        self._check_weighting()

    def _check_weighting(self) -> None:
        """ValueError naming the key for a quality threshold outside [0, 1], or a schedule
        under which no replay can ever count."""
        for name in ("quality_floor", "quality_full"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1] (a replay quality), got {getattr(self, name)}")
        if self.replay_weighting != "quality":
            return
        if not self.quality_floor < self.quality_full:
            raise ValueError(
                f"quality_floor ({self.quality_floor}) must be below quality_full ({self.quality_full}): "
                "otherwise the weight never rises from 0 and no replay ever counts"
            )
        if not self.quality_samples:
            raise ValueError("quality_samples must be at least 2 with replay_weighting: 'quality' (the weights come from the measured "
                             "replay quality); set replay_weighting: 'uniform' to replay without measuring")

    def replay_side(self, image_size: tuple[int, ...] | None) -> int:
        """The side of the replayed patches for the solver's training input of ``image_size``
        (H, W): the dataset's patches, or its images.

        Raises ValueError naming the option when the solver's input cannot be built from
        replays of that side: an input that is not a square 2D image, a ``replay_size``
        larger than it, or (without ``replay_size``) an input side that is not a power of
        two >= 16."""
        if image_size is None or len(image_size) != 2:
            raise ValueError(f"relay needs 2D training inputs of one size (set the dataset's img_size or patch_size), got size {image_size}")
        smaller = min(image_size)
        if self.replay_size is None:
            if image_size[0] != image_size[1] or not _is_generator_side(smaller):
                raise ValueError(
                    f"relay's generators draw squares whose side is a power of two >= 16, and the solver's input is "
                    f"{image_size[0]}x{image_size[1]}: set common.strategy.kwargs.replay_size (a power of two <= {smaller}) "
                    "to replay patches of that side"
                )
            return smaller
        if self.replay_size > smaller:
            raise ValueError(
                f"common.strategy.kwargs.replay_size: {self.replay_size} is larger than the solver's input "
                f"{image_size[0]}x{image_size[1]}; the generators learn from crops of it: choose a power of two <= {smaller}"
            )
        return self.replay_size


def _is_generator_side(side: int) -> bool:
    """Whether the generators can draw squares of side ``side``."""
    try:
        check_size(side)
    except ValueError:
        return False
    return True


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
