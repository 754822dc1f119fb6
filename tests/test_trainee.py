"""What a strategy hands to the site step besides its network and learner: Lightning callbacks
and a budget in optimiser steps (``Trainee.callbacks``, ``Trainee.max_steps``), passed to the
trainer as they are; the learner is left as the strategy made it."""

from __future__ import annotations

import pytest
from experiments import tiny_config
from pytorch_lightning.callbacks import Callback

from siteflow.config import load_config
from siteflow.engine.runner import ExperimentRun
from siteflow.strategies.base import SiteInput, Trainee


class Seen(Callback):
    """Records what a fit did: its learner, its batches per epoch, the step of every validation."""

    def __init__(self) -> None:
        self.learners: list = []
        self.batches: list[int] = []
        self.validated_at: list[int] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.learners.append(pl_module)
        self.batches.append(trainer.num_training_batches)

    def on_validation_end(self, trainer, pl_module) -> None:
        self.validated_at.append(trainer.global_step)


@pytest.fixture
def run(tmp_path) -> ExperimentRun:
    config = load_config(tiny_config(tmp_path, "local", common={"train": {"batch_size": 2, "epochs": 5}}))
    return ExperimentRun(config, tmp_path / "run")


def fit(run: ExperimentRun, seen: Seen, *, max_steps: int | None, epochs: int) -> None:
    site_run = run.site_runs[0]
    strategy = run.strategy
    start = run.start(site_run, lambda: strategy.build_network(run.task))
    trainee = Trainee(
        lambda: strategy.build_network(run.task),
        lambda network: strategy.make_learner(run, network, [site_run], SiteInput(start.weights)),
        callbacks=lambda network: [seen],
        max_steps=max_steps,
    )
    run.fit("budget", [site_run], start.weights, trainee, save_dir=None, epochs=epochs)


def test_a_step_budget_stops_mid_epoch_and_validates_once_at_the_stop(run):
    seen = Seen()
    fit(run, seen, max_steps=3, epochs=5)
    assert seen.batches == [2]  # 4 training samples in batches of 2
    assert seen.validated_at == [2, 3]  # after the first epoch, then once at the stop, mid-epoch
    assert "configure_callbacks" not in vars(seen.learners[0])  # the strategy's learner, untouched


def test_without_a_step_budget_a_fit_runs_its_epochs(run):
    seen = Seen()
    fit(run, seen, max_steps=None, epochs=2)
    assert seen.validated_at == [2, 4]
