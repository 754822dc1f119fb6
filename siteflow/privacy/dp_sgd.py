"""DP-SGD at a site (Abadi et al., 2016) with Opacus, around the site's usual training step.

:func:`private_loader` turns the site's training loader into one of Poisson batches (what
the accountant assumes), still drawn from the loader's seeded generator and still handing
item seeds to the datasets that take them, so a resumed stage draws the same batches. The
Lightning callback :class:`DPSGD` does the rest when the fit starts: Opacus'
``GradSampleModule`` hooks compute every sample's gradient, Opacus' ``DPOptimizer`` clips each
to ``max_grad_norm`` and adds seeded Gaussian noise to their sum; when the fit ends, the steps
taken go into the site's :class:`~siteflow.privacy.accounting.PrivacyLedger`, and the site's
epsilon so far is logged. The learner's ``training_step`` is not touched.

A Poisson draw may be empty (probability ``(1 - q) ** n`` per step: about ``e ** -batch_size``):
that step is skipped and still counted by the accountant.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator, Mapping

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch.utils.data import DataLoader, Sampler

from siteflow.config.schema import DPSGDConfig
from siteflow.core.extras import optional_module
from siteflow.datasets.sampling import SEED_BOUND, ItemIndex, takes_item_seeds
from siteflow.privacy.accounting import PrivacyLedger, noise_for

opacus = optional_module("opacus", "privacy", "DP-SGD (common.train.dp_sgd)")

log = logging.getLogger(__name__)

LOSS_TOLERANCE = 1e-4
"""Relative tolerance of the check that the loss of a batch is the mean of its samples' losses."""


class PoissonBatchSampler(Sampler[list[ItemIndex]]):
    """Poisson batches: every draw takes each of the ``size`` items independently with
    probability ``sample_rate``; an epoch is ``round(1 / sample_rate)`` draws. With
    ``item_seeds``, each item comes with its own seed, ``(index, item_seed)`` (see
    :mod:`siteflow.datasets.sampling`). Everything is drawn from ``generator``: per draw the
    ``size`` uniform numbers, then one seed per chosen item. An empty draw is skipped and
    counted in :attr:`skipped`.

    Args:
        size: the dataset's length.
        sample_rate: the probability of an item to be in a batch, in (0, 1].
        generator: the training loader's generator.
        item_seeds: yield ``(index, item_seed)`` pairs instead of indices.
    """

    def __init__(self, size: int, sample_rate: float, generator: torch.Generator, *, item_seeds: bool) -> None:
        super().__init__()
        if size < 1 or not 0 < sample_rate <= 1:
            raise ValueError(f"need at least one item and a sample rate in (0, 1], got {size} items, rate {sample_rate}")
        self.size = size
        self.sample_rate = sample_rate
        self.generator = generator
        self.item_seeds = item_seeds
        self.draws = max(1, round(1 / sample_rate))
        self.skipped = 0

    def __len__(self) -> int:
        return self.draws

    def __iter__(self) -> Iterator[list[ItemIndex]]:
        for _ in range(self.draws):
            chosen = (torch.rand(self.size, generator=self.generator) < self.sample_rate).nonzero().flatten().tolist()
            if not chosen:
                self.skipped += 1
                log.warning("an empty Poisson batch: the step is skipped (and counted by the accountant)")
                continue
            if self.item_seeds:
                seeds = torch.randint(0, SEED_BOUND, (len(chosen),), generator=self.generator, dtype=torch.int64).tolist()
                yield list(zip(chosen, seeds))
            else:
                yield chosen


def private_loader(train_loader: DataLoader, batch_size: int) -> DataLoader:
    """The training loader ``train_loader`` (a shuffled one of
    :func:`siteflow.datasets.pooling.loader`) with Poisson batches of expected size
    ``batch_size``, drawn from its generator (:class:`PoissonBatchSampler`)."""
    dataset = train_loader.dataset
    size = len(dataset)
    sampler = PoissonBatchSampler(size, min(1.0, batch_size / size), train_loader.generator, item_seeds=takes_item_seeds(dataset))
    return DataLoader(dataset, batch_sampler=sampler, num_workers=train_loader.num_workers, generator=train_loader.generator)


class DPSGD(Callback):
    """Makes a site's fit differentially private (see the module's docstring).

    Args:
        config: the site's ``train.dp_sgd`` (its ``stages`` filled in).
        ledger: the site's privacy ledger.
        stage: the stage's name, its ledger entry.
        sampler: the Poisson batch sampler of the fit's training loader.
        seed: seeds the noise.
    """

    def __init__(self, config: DPSGDConfig, *, ledger: PrivacyLedger, stage: str, sampler: PoissonBatchSampler, seed: int) -> None:
        self.config = config
        self.ledger = ledger
        self.stage = stage
        self.sampler = sampler
        self.seed = seed
        self.noise: torch.Generator | None = None
        self.noise_multiplier: float | None = None
        self.grad_sample: opacus.GradSampleModule | None = None
        self.loss_checked = False
        self._restored: Mapping[str, Any] | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size > 1:
            raise RuntimeError("DP-SGD trains on one device: train.dp_sgd cannot run under DDP (several GPUs or CPU processes)")
        if getattr(pl_module, "extra_losses", None):
            raise ValueError(
                "train.dp_sgd: this strategy adds loss terms to every step (FedProx, Ditto, SCAFFOLD), whose gradients "
                "would bypass the per-sample clipping; use FedAvg, FedAvgM, FedAdam, FedYogi, FedAdagrad, FedBN, FedPer or FFL"
            )
        model = pl_module.model
        problems = opacus.validators.ModuleValidator.validate(model, strict=False)
        if problems:
            raise ValueError(f"train.dp_sgd: Opacus cannot train this model privately: {'; '.join(map(str, problems[:3]))}")
        for module in model.modules():  # Opacus' backward hooks forbid in-place activations (same values)
            if isinstance(getattr(module, "inplace", None), bool):
                module.inplace = False
        self.noise_multiplier = self._noise_multiplier(trainer)
        self.noise = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        self.grad_sample = opacus.GradSampleModule(model, loss_reduction="mean")
        (optimizer,) = trainer.optimizers
        expected = max(1, round(self.sampler.sample_rate * self.sampler.size))
        trainer.optimizers = [
            opacus.optimizers.DPOptimizer(
                optimizer, noise_multiplier=self.noise_multiplier, max_grad_norm=self.config.max_grad_norm,
                expected_batch_size=expected, generator=self.noise,
            )
        ]
        if self._restored is not None:
            self.noise.set_state(self._restored["noise"])
            self.sampler.skipped = int(self._restored["skipped"])

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if not self.loss_checked:
            check_per_sample_loss(pl_module, batch)
            self.loss_checked = True

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.grad_sample is not None:
            self.grad_sample.cleanup()  # removes Opacus' hooks and per-sample gradients from the site's network
        if trainer.global_rank != 0:
            return
        steps = trainer.global_step + self.sampler.skipped
        spent = self.ledger.record(self.stage, noise_multiplier=self.noise_multiplier, sample_rate=self.sampler.sample_rate, steps=steps)
        log.info(
            "stage %s: DP-SGD at %s, %d steps (noise multiplier %.3f, sample rate %.4f): epsilon %.3f at delta %g",
            self.stage, self.ledger.site, steps, spent.noise_multiplier, spent.sample_rate, spent.epsilon, self.ledger.delta,
        )
        for logger in trainer.loggers:
            logger.log_metrics({"privacy/epsilon": spent.epsilon}, step=trainer.global_step)

    def _noise_multiplier(self, trainer: pl.Trainer) -> float:
        """The configured noise multiplier, else the site's (its first stage's), else the one
        that spends ``target_epsilon`` over ``stages`` stages of this fit's planned steps."""
        if self.config.noise_multiplier is not None:
            return self.config.noise_multiplier
        kept = self.ledger.noise_multiplier()
        if kept is not None:
            return kept
        steps = self.sampler.draws * trainer.max_epochs
        if trainer.max_steps != -1:  # a federation's local_steps stop a fit earlier
            steps = min(steps, trainer.max_steps)
        steps *= self.config.stages or 1
        return noise_for(
            self.config.target_epsilon, delta=self.config.delta, sample_rate=self.sampler.sample_rate, steps=steps,
            accountant=self.config.accountant,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"noise": self.noise.get_state() if self.noise is not None else None, "skipped": self.sampler.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = state_dict if state_dict.get("noise") is not None else None


def private_training(
    config: DPSGDConfig, train_loader: DataLoader, *, batch_size: int, folder: Path, site: str, stage: str, seed: int
) -> tuple[DataLoader, DPSGD]:
    """The Poisson-batch loader (:func:`private_loader`) and the :class:`DPSGD` callback of a
    fit of ``stage`` at ``site``, whose ledger is in ``folder``."""
    private = private_loader(train_loader, batch_size)
    ledger = PrivacyLedger(folder, site, delta=config.delta, accountant=config.accountant)
    return private, DPSGD(config, ledger=ledger, stage=stage, sampler=private.batch_sampler, seed=seed)


def check_per_sample_loss(learner: pl.LightningModule, batch: Mapping[str, Any]) -> None:
    """Raise unless the learner's loss of ``batch`` is the mean of its samples' losses: what
    makes a sample's gradient its own (a loss pooled over the batch, such as a batch Dice or
    a log of the mean Dice, mixes the samples, and the clipping no longer bounds one
    sample's contribution). The model runs once in eval mode, without gradients (no random
    draw: dropout is off)."""
    images = batch["image"]
    count = len(images)
    if count < 2:
        return
    model = learner.model
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            outputs = model(images)
            whole = float(learner.loss_of(outputs, batch))
            parts = [float(learner.loss_of(outputs[i : i + 1], _sample(batch, i, count))) for i in range(count)]
    finally:
        model.train(was_training)
    mean = sum(parts) / count
    if abs(whole - mean) > LOSS_TOLERANCE * max(abs(whole), abs(mean), 1e-8):
        raise ValueError(
            f"train.dp_sgd: the loss {type(learner.loss).__name__} of a batch ({whole:.6g}) is not the mean of its "
            f"samples' losses ({mean:.6g}), so a sample's gradient depends on the others and the clipping does not bound "
            "it: choose common.train.loss that averages per-sample terms (e.g. dice_ce or cross_entropy without "
            "class_weights, batch_dice false)"
        )


def _sample(batch: Mapping[str, Any], index: int, count: int) -> dict[str, Any]:
    """Item ``index`` of ``batch`` as a batch of one (tensors and lists of ``count`` entries sliced)."""
    return {
        key: value[index : index + 1] if isinstance(value, (torch.Tensor, list, tuple)) and len(value) == count else value
        for key, value in batch.items()
    }
