"""The validated shape of an experiment config: what every site trains with."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Precision = Literal["32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "32", "16", "bf16", "64"]
"""Lightning's ``precision`` values (its ``transformer-engine`` ones need NVIDIA's package)."""


@dataclass(frozen=True)
class Component:
    """A registered class by name, with the keyword arguments to build it."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InferenceConfig:
    """How validation, testing and ``predict_test.py`` run a segmentation model over an image
    (``train.inference``).

    ``mode``: ``"whole"`` runs the model once on the whole image; ``"sliding_window"`` runs it
    on windows of ``roi_size`` that overlap by the fraction ``overlap`` and blends their logits
    (``"gaussian"``: less weight towards a window's edges; ``"constant"``: equal weights),
    ``sw_batch_size`` windows at a time; ``"auto"`` is a sliding window when ``roi_size`` is
    set, else the whole image. ``roi_size`` (one size per spatial axis) defaults to the
    dataset's ``patch_size`` when the config is loaded, so that a model trained on patches is
    run on windows of its patch size.
    """

    mode: Literal["auto", "whole", "sliding_window"] = "auto"
    """``whole``: one pass over the whole image; ``sliding_window``: overlapping windows, blended; ``auto``: windows when ``roi_size`` is set."""
    roi_size: tuple[int, ...] | None = None
    """The window, one size per spatial axis (default: the dataset's ``patch_size``)."""
    overlap: float = 0.5
    """The fraction by which neighbouring windows overlap, in [0, 1)."""
    blend: Literal["gaussian", "constant"] = "gaussian"
    """How overlapping windows' logits are weighted: less towards a window's edges (``gaussian``) or equally."""
    sw_batch_size: int = 4
    """Windows run through the model at once."""


@dataclass(frozen=True)
class DPSGDConfig:
    """Differentially private training at a site (``train.dp_sgd``; see :mod:`siteflow.privacy`).

    Every training step clips each sample's gradient to the L2 norm ``max_grad_norm`` and adds
    Gaussian noise of standard deviation ``noise_multiplier * max_grad_norm`` to their sum;
    batches are Poisson samples (every item with probability ``batch_size / samples``). Give
    either ``noise_multiplier`` or ``target_epsilon``: the noise multiplier that spends
    ``target_epsilon`` at ``delta`` over ``stages`` trainings of the site (default: its
    rounds, +1 for a finishing step, in a federation; its cycles in ``sequential``; else 1).
    ``accountant``: Opacus' ``"rdp"`` (Renyi DP) or ``"prv"`` (privacy random variables).
    """

    noise_multiplier: float | None = None
    """The Gaussian noise's standard deviation over ``max_grad_norm`` (give this or ``target_epsilon``)."""
    target_epsilon: float | None = None
    """The epsilon a site spends over ``stages`` trainings; the noise multiplier is found for it."""
    delta: float = 1e-5
    """The delta of (epsilon, delta)-DP, in (0, 1); take it below 1 / (a site's training samples)."""
    max_grad_norm: float = 1.0
    """Every sample's gradient is clipped to this L2 norm."""
    accountant: Literal["rdp", "prv"] = "rdp"
    """Opacus' accountant: Renyi DP (``rdp``) or privacy random variables (``prv``)."""
    stages: int | None = None
    """How many trainings of a site ``target_epsilon`` covers (default: the strategy's rounds or cycles)."""


@dataclass(frozen=True)
class TrainConfig:
    """How one site trains (``common.train``, overridable per site)."""

    epochs: int = 10
    """Epochs of training at a site (per visit, or per round as the strategy says)."""
    batch_size: int = 8
    """Training samples per step."""
    precision: Precision = "32-true"
    """Lightning's numeric precision (``16-mixed``, ``bf16-mixed``: mixed precision on GPUs)."""
    loss: Component = Component("explog")
    """The loss, a registered name with its options (see Losses below)."""
    optimizer: Component = Component("Adam", {"lr": 1e-3})
    """Any ``torch.optim`` class by name (``Adam``, ``AdamW``, ``SGD``...) with its keyword arguments."""
    scheduler: Component | None = None
    """Any ``torch.optim.lr_scheduler`` class by name with its keyword arguments, stepped every epoch; null: none."""
    val_every_n_epochs: int = 1
    """Validate on the site's validation split every this many epochs."""
    log_every_n_steps: int = 10
    """Log training metrics every this many steps."""
    gradient_clip_val: float | None = None
    """Clip the gradient norm to this value; null: no clipping."""
    accumulate_grad_batches: int = 1
    """Batches whose gradients are summed before each optimiser step."""
    inference: InferenceConfig = InferenceConfig()
    """How validation, testing and prediction run the model over an image (see common.train.inference)."""
    dp_sgd: DPSGDConfig | None = None
    """Differentially private training at every site (see common.train.dp_sgd); null: off."""


@dataclass(frozen=True)
class CheckpointConfig:
    """Where a site's checkpoints go and what it starts from.

    ``save`` is a folder under ``<run>/checkpoints/`` (default ``task_<id>``); ``load`` a
    weights file this site starts from (safetensors; relative paths are under
    ``<run>/checkpoints/``); ``resume`` continues an interrupted site from its ``last.ckpt``.
    """

    save: str | None = None
    """The folder under ``<run>/checkpoints/`` of this site's checkpoints (default ``task_<id>``)."""
    load: str | None = None
    """A safetensors weights (or hand-over) file this site starts from; relative: under ``<run>/checkpoints/``."""
    resume: bool = True
    """Continue an interrupted site from its ``last.ckpt``."""


@dataclass(frozen=True)
class SiteConfig:
    """One site of the study: its id, name and fully merged dataset entry."""

    task_id: int
    task_name: str
    dataset: Component
    available: bool = True  # False: a deployed run's other site, whose data is not here


@dataclass(frozen=True)
class SiteRun:
    """One site trained in this run, with everything merged."""

    site: SiteConfig
    train: TrainConfig
    checkpoint: CheckpointConfig

    @property
    def task_id(self) -> int:
        return self.site.task_id

    @property
    def task_name(self) -> str:
        return self.site.task_name

    @property
    def save_dir(self) -> str:
        return self.checkpoint.save or f"task_{self.site.task_id}"


@dataclass(frozen=True)
class ExperimentConfig:
    """A validated experiment: every site (all test sites) and the sites trained here.

    ``deterministic`` runs every trainer in Lightning's deterministic mode (deterministic
    kernels, no cuDNN benchmarking; see :class:`siteflow.engine.site_step.SiteStep`).
    """

    name: str
    source: Path
    seed: int
    num_workers: int
    model: Component
    strategy: Component
    sites: tuple[SiteConfig, ...]
    site_runs: tuple[SiteRun, ...]
    deterministic: bool = False

    @property
    def deployed(self) -> bool:
        """True when this run trains a single site of a study of several."""
        return len(self.site_runs) == 1 and len(self.sites) > 1

    def with_load(self, path: Path) -> "ExperimentConfig":
        """The same config with its (single) current task starting from the file ``path``."""
        (site_run,) = self.site_runs
        checkpoint = dataclasses.replace(site_run.checkpoint, load=str(path))
        return dataclasses.replace(self, site_runs=(dataclasses.replace(site_run, checkpoint=checkpoint),))

    def processed(self) -> dict:
        """The merged config as plain data, for ``processed_config.yaml``."""
        return {
            "name": self.name,
            "source": str(self.source),
            "seed": self.seed,
            "num_workers": self.num_workers,
            "deterministic": self.deterministic,
            "model": dataclasses.asdict(self.model),
            "strategy": dataclasses.asdict(self.strategy),
            "sites": [dataclasses.asdict(s) for s in self.sites],
            "tasks": [dataclasses.asdict(t) for t in self.site_runs],
        }
