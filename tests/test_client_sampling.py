"""Which sites train in a round, and how much: client sampling (``fraction``, ``min_sites``;
seeded, logged, simulated and on Flower) and the local budget in optimiser steps
(``local_steps``) instead of epochs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from experiments import tiny_config
from siteflow.config import ConfigError, load_config
from siteflow.engine.runner import ExperimentRun
from siteflow.strategies.federated import ROUND_STATE, FedAvgStrategy, TooFewSites
from siteflow.strategies.federated.sampling import draw_sites, sample_size
from siteflow.tasks import Learner

SITES = [f"site{i}" for i in range(1, 11)]


def test_the_sample_size_is_the_fraction_rounded_up_at_least_min_sites():
    assert sample_size(10, 0.3, None) == 3  # 0.3 * 10 is 3.0000000000000004 in floating point
    assert sample_size(3, 0.5, None) == 2
    assert sample_size(10, 0.01, None) == 1
    assert sample_size(10, 0.2, 5) == 5
    assert sample_size(4, 1.0, None) == 4 and sample_size(4, 0.5, 9) == 4


def test_the_draw_is_seeded_by_the_study_and_the_round_and_keeps_the_sites_order():
    draws = [draw_sites(SITES, fraction=0.3, min_sites=None, seed=7, round_number=r) for r in range(1, 21)]
    assert all(len(draw) == 3 and draw == sorted(draw, key=SITES.index) for draw in draws)
    assert draws == [draw_sites(SITES, fraction=0.3, min_sites=None, seed=7, round_number=r) for r in range(1, 21)]
    assert len({tuple(draw) for draw in draws}) > 10  # rounds draw afresh
    assert draws != [draw_sites(SITES, fraction=0.3, min_sites=None, seed=8, round_number=r) for r in range(1, 21)]
    assert set().union(*map(set, draws)) == set(SITES)
    assert draw_sites(SITES[:4], fraction=1.0, min_sites=None, seed=7, round_number=1) == SITES[:4]


class Recording(FedAvgStrategy):
    """The real FedAvg, remembering which sites trained in which round; ``failing`` sites
    raise in their site step."""

    def __init__(self, failing: tuple[str, ...] = (), **kwargs) -> None:
        super().__init__(**kwargs)
        self.failing = failing
        self.trained: dict[int, list[str]] = {}

    def site_step(self, site, received, round_number):
        self.trained.setdefault(round_number, []).append(site.name)
        if site.name in self.failing:
            raise RuntimeError(f"{site.name} lost its disk")
        return super().site_step(site, received, round_number)


def sampled_run(folder: Path, failing: tuple[str, ...] = (), **kwargs) -> ExperimentRun:
    config = load_config(tiny_config(folder, "fedavg", sites=3, common={"seed": 3, "strategy": {"kwargs": kwargs}}))
    return ExperimentRun(config, folder / "run", strategy=Recording(failing, **config.strategy.kwargs))


@pytest.mark.slow
def test_a_simulated_round_trains_only_its_sampled_sites_logs_them_and_tests_every_site(tmp_path, caplog):
    run = sampled_run(tmp_path, rounds=3, fraction=0.5)
    with caplog.at_level(logging.INFO, logger="siteflow"):
        summary = run.execute()
    names = ["site1", "site2", "site3"]
    for round_number in (1, 2, 3):
        drawn = draw_sites(names, fraction=0.5, min_sites=None, seed=3, round_number=round_number)
        assert run.strategy.trained[round_number] == drawn and len(drawn) == 2
        assert f"round {round_number}: 2 of 3 sites sampled: {', '.join(drawn)}" in caplog.text
    assert len({tuple(sites) for sites in run.strategy.trained.values()}) > 1
    assert summary["stages"] == ["round1", "round2", "round3"]
    assert all(set(row.values) == set(names) for row in run.results)


@pytest.mark.slow
def test_a_failing_sampled_site_follows_the_min_sites_rule(tmp_path, caplog):
    drawn = draw_sites(["site1", "site2", "site3"], fraction=0.5, min_sites=None, seed=3, round_number=1)
    strict = tmp_path / "strict"
    strict.mkdir()
    with pytest.raises(TooFewSites, match="round 1: 1 of 2 sites sent a usable update, fewer than min_sites=2"):
        sampled_run(strict, failing=(drawn[0],), rounds=1, fraction=0.5).execute()
    lenient = tmp_path / "lenient"
    lenient.mkdir()
    run = sampled_run(lenient, failing=(drawn[0],), rounds=1, fraction=0.5, min_sites=1)
    with caplog.at_level(logging.ERROR):
        assert run.execute()["stages"] == ["round1"]
    assert f"round 1: site {drawn[0]} failed" in caplog.text


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"fraction": 0}, "common.strategy.kwargs: fraction must be in (0, 1], got 0"),
        ({"fraction": 1.5}, "common.strategy.kwargs: fraction must be in (0, 1], got 1.5"),
        ({"fraction": 0.5, "min_sites": 3}, "common.strategy.kwargs.min_sites: is 3, but the study trains only 2 sites"),
        ({"local_steps": 0}, "common.strategy.kwargs: local_steps must be at least 1, got 0"),
        ({"local_steps": 5, "local_epochs": 2}, "common.strategy.kwargs: local_steps=5 replaces local_epochs: set one of them, not both"),
    ],
)
def test_a_wrong_sampling_or_budget_option_is_one_config_error_naming_it(tmp_path, kwargs, message):
    with pytest.raises(ConfigError) as error:
        load_config(tiny_config(tmp_path, "fedavg", sites=2, common={"strategy": {"kwargs": kwargs}}))
    assert message in str(error.value)


class StepCounter:
    """An extra loss of 0 that counts the training steps of each site's learner."""

    def __init__(self) -> None:
        self.steps = 0

    def __call__(self, learner: Learner) -> torch.Tensor:
        self.steps += 1
        return torch.zeros((), device=learner.device)


class Counting(FedAvgStrategy):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.counters: list[StepCounter] = []

    def extra_losses(self, start):
        self.counters.append(StepCounter())
        return [self.counters[-1]]


@pytest.mark.parametrize("budget, steps", [({"local_steps": 3}, 3), ({"local_steps": 1}, 1), ({"local_epochs": 2}, 4)])
@pytest.mark.slow
def test_a_round_s_budget_in_steps_stops_mid_epoch_and_one_in_epochs_runs_whole_ones(tmp_path, budget, steps):
    # 6 samples a site, 2 of them carved for validation: 4 training samples, 2 batches of 2 an epoch
    config = load_config(tiny_config(tmp_path, "fedavg", sites=2, common={"strategy": {"kwargs": {"rounds": 2, **budget}}, "train": {"batch_size": 2}}))
    run = ExperimentRun(config, tmp_path / "run", strategy=Counting(**config.strategy.kwargs))
    run.execute()
    assert [counter.steps for counter in run.strategy.counters] == [steps] * 4  # 2 sites x 2 rounds


@pytest.mark.slow
def test_the_flower_server_asks_only_the_sampled_sites_and_gives_the_simulated_weights(tmp_path):
    from flower_local import simulated_and_deployed

    config = tiny_config(tmp_path, "fedavg", sites=2, common={"strategy": {"kwargs": {"rounds": 2, "fraction": 0.5}}})
    simulated, deployed = simulated_and_deployed(tmp_path, config)
    (_, deployed_info), (_, simulated_info) = deployed.load_state(ROUND_STATE), simulated.load_state(ROUND_STATE)
    assert deployed_info["round"] == 2 and deployed_info["digests"] == simulated_info["digests"]
    for i, site in ((1, "site1"), (2, "site2")):
        log = (tmp_path / f"hospital{i}" / "fedavg" / "t" / site / "logs" / "flower_site.log").read_text()
        trained = [r for r in (1, 2) if f"round {r}: site {site} trained" in log]
        expected = [r for r in (1, 2) if site in draw_sites(["site1", "site2"], fraction=0.5, min_sites=None, seed=1, round_number=r)]
        assert trained == expected, f"{site} trained in rounds {trained}, was sampled in {expected}"
        assert all(f"round {r}: site {site} tested" in log for r in (1, 2))  # every site is tested, sampled or not
