"""A federation's learning-rate schedule over its rounds (``schedule``): afresh in every round
(``per_round``, the default) or once across all rounds (``across_rounds``): round r starts the
schedule at epoch ``(r - 1) * local_epochs``. Checked in the rates Lightning's
LearningRateMonitor logs for every round, against the cosine computed by hand; a fit that resumes
mid-round from its checkpoint keeps the saved schedule; and the settings it refuses."""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from experiments import tiny_config
from siteflow.config import ConfigError, load_config
from siteflow.engine.runner import ExperimentRun
from siteflow.engine.site_step import ScheduleFrom

LR = 0.01  # tiny_config's Adam


def cosine(epoch: int, t_max: int) -> float:
    """CosineAnnealingLR's rate at ``epoch`` (eta_min 0), by hand."""
    return LR * (1 + math.cos(math.pi * epoch / t_max)) / 2


def logged_rates(run_folder: Path, stage: str) -> list[float]:
    """The rates the stage's CSV log holds, epoch by epoch (LearningRateMonitor's ``lr-Adam``)."""
    with open(run_folder / "logs" / stage / "csv" / "metrics.csv", newline="") as handle:
        return [float(row["lr-Adam"]) for row in csv.DictReader(handle) if row.get("lr-Adam")]


def federation(tmp_path: Path, schedule: str, **scheduler) -> Path:
    return tiny_config(
        tmp_path, "fedavg", sites=2,
        common={"strategy": {"kwargs": {"rounds": 3, "local_epochs": 2, "schedule": schedule}},
                "train": {"scheduler": {"name": "CosineAnnealingLR", "kwargs": {"T_max": 6, **scheduler}}}},
    )


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["across_rounds", "per_round"])
def test_each_round_trains_at_the_rates_of_its_place_in_the_schedule(tmp_path, schedule):
    run = ExperimentRun(load_config(federation(tmp_path, schedule)), tmp_path / "run")
    run.execute()
    for round_number in (1, 2, 3):
        first = 2 * (round_number - 1) if schedule == "across_rounds" else 0
        expected = [cosine(first, 6), cosine(first + 1, 6)]
        for site in ("site1", "site2"):
            assert logged_rates(tmp_path / "run", f"round{round_number}/{site}") == pytest.approx(expected, rel=1e-9)


class Line(pl.LightningModule):
    """y = w x with SGD and a cosine over 4 epochs; records the rate of every batch."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Linear(1, 1, bias=False)
        self.rates: list[float] = []

    def training_step(self, batch, batch_idx):
        self.rates.append(self.trainer.optimizers[0].param_groups[0]["lr"])
        x, y = batch
        return ((self.w(x) - y) ** 2).mean()

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=LR)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


def fit(module: Line, epochs: int, callbacks: list, ckpt_path: Path | None = None, root: Path | None = None) -> pl.Trainer:
    data = DataLoader(TensorDataset(torch.ones(4, 1), torch.ones(4, 1)), batch_size=2)
    trainer = pl.Trainer(max_epochs=epochs, callbacks=callbacks, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=root, enable_checkpointing=root is not None)
    trainer.fit(module, data, ckpt_path=ckpt_path)
    return trainer


def test_a_fit_started_at_epoch_2_takes_the_rates_of_epochs_2_and_3():
    module = Line()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(module, 2, [ScheduleFrom(2)])
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]  # stepped early on purpose, silently
    assert module.rates == pytest.approx([cosine(2, 4)] * 2 + [cosine(3, 4)] * 2, rel=1e-12)


def test_a_resumed_fit_keeps_its_saved_schedule_instead_of_stepping_it_again(tmp_path):
    first = Line()
    trainer = fit(first, 1, [ScheduleFrom(2)], root=tmp_path)  # epoch 2 of the schedule, then a crash
    saved = tmp_path / "stopped.ckpt"
    trainer.save_checkpoint(saved)
    resumed = Line()
    fit(resumed, 2, [ScheduleFrom(2)], ckpt_path=saved)  # the same fit again, from its checkpoint
    assert first.rates == pytest.approx([cosine(2, 4)] * 2, rel=1e-12)
    assert resumed.rates == pytest.approx([cosine(3, 4)] * 2, rel=1e-12)  # not epoch 5


def test_a_schedule_that_steps_per_batch_cannot_be_started_at_an_epoch():
    class PerStep(Line):
        def configure_optimizers(self):
            config = super().configure_optimizers()
            config["lr_scheduler"]["interval"] = "step"
            return config

    with pytest.raises(ValueError, match="^a schedule started at epoch 2 must step per epoch, not per step$"):
        fit(PerStep(), 1, [ScheduleFrom(2)])


@pytest.mark.parametrize(
    "kwargs, train, message",
    [
        ({"schedule": "across_rounds"}, {"scheduler": {"name": "CosineAnnealingLR", "kwargs": {"T_max": 5}}},
         "common.strategy.kwargs.schedule: across_rounds runs the schedule of site 'site1' over rounds x local_epochs = "
         "6 epochs, but its train.scheduler.kwargs.T_max is 5: the cosine would climb back up; set T_max: 6"),
        ({"schedule": "across_rounds"}, {},
         "common.strategy.kwargs.schedule: across_rounds runs train.scheduler over the rounds, but site 'site1' has none: "
         "set one, or schedule: per_round"),
        ({"schedule": "across_round"}, {},
         "common.strategy.kwargs.schedule: expected 'per_round' or 'across_rounds', got 'across_round'; did you mean 'across_rounds'?"),
        ({"schedule": "across_rounds", "local_steps": 4, "local_epochs": 1}, {"scheduler": {"name": "StepLR", "kwargs": {"step_size": 1}}},
         "common.strategy.kwargs.schedule: across_rounds continues the schedule epoch by epoch, and a round of local_steps "
         "ends mid-epoch: set local_epochs"),
    ],
)
def test_a_schedule_that_cannot_span_the_rounds_is_refused_naming_the_key(tmp_path, kwargs, train, message):
    config = tiny_config(tmp_path, "fedavg", sites=2, common={"strategy": {"kwargs": {"rounds": 3, "local_epochs": 2, **kwargs}}, "train": train})
    with pytest.raises(ConfigError) as refused:
        load_config(config)
    assert str(refused.value) == f"{config}: {message}"


def test_a_cosine_that_spans_the_rounds_and_a_schedule_without_an_end_are_accepted(tmp_path):
    assert load_config(federation(tmp_path, "across_rounds")).strategy.kwargs["schedule"] == "across_rounds"
    stepwise = tiny_config(tmp_path, "fedavg", sites=2, common={
        "strategy": {"kwargs": {"rounds": 3, "local_epochs": 2, "schedule": "across_rounds"}},
        "train": {"scheduler": {"name": "StepLR", "kwargs": {"step_size": 2, "gamma": 0.5}}}})
    assert load_config(stepwise).site_runs[0].train.scheduler.name == "StepLR"
