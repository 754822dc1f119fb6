"""The one schedule of a federation (``Federation.schedule``), walked by the simulation and by
the Flower server alike: the steps from the start, and from wherever a restarted run stands."""

from __future__ import annotations

from experiments import tiny_config

from siteflow.config import load_config
from siteflow.engine.runner import ExperimentRun
from siteflow.strategies.federated.federation import Evaluate, Federation, Finish, SaveFinal, Train


def walk(federation: Federation) -> list:
    """The steps of ``federation``'s schedule, each round closed as a driver would (its number saved)."""
    steps = []
    for step in federation.schedule():
        steps.append(step)
        if isinstance(step, Train):
            federation.round = step.round_number
    return steps


def federation(tmp_path, strategy: str, **kwargs) -> Federation:
    config = load_config(tiny_config(tmp_path, strategy, common={"strategy": {"kwargs": kwargs}}))
    run = ExperimentRun(config, tmp_path / "run")
    return Federation(run.strategy, run)


def test_the_schedule_trains_every_round_tests_when_due_and_saves_the_final_weights_once(tmp_path):
    rounds = federation(tmp_path, "fedavg", rounds=3, test_every=2)
    assert walk(rounds) == [Train(1), Train(2), Evaluate(2), Train(3), SaveFinal(), Evaluate(3)]


def test_a_restarted_federation_tests_its_saved_round_first_then_goes_on(tmp_path):
    rounds = federation(tmp_path, "fedavg", rounds=3)
    rounds.round = 1  # saved, its test not recorded
    assert walk(rounds) == [Evaluate(1), Train(2), Evaluate(2), Train(3), SaveFinal(), Evaluate(3)]
    rounds.round = 3  # stopped after the last round: its final weights again, its test
    assert walk(rounds) == [SaveFinal(), Evaluate(3)]


def test_a_strategy_with_a_finishing_step_ends_with_it(tmp_path):
    rounds = federation(tmp_path, "ffl", rounds=1, fine_tune_epochs=1)
    assert walk(rounds) == [Train(1), SaveFinal(), Evaluate(1), Finish()]
