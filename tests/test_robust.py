"""Robust aggregation: each rule by hand on small tensors, the option checked at validation,
sample counts capped by enrolment, and one poisoned site of five against FedAvg and each rule."""

from __future__ import annotations

import logging

import pytest
import torch

from experiments import tiny_config
from poisoning import CLAIMED, POISONED, PoisonedFedAvg
from siteflow.config import ConfigError, load_config
from siteflow.core.errors import OptionError
from siteflow.engine.runner import ExperimentRun
from siteflow.strategies.federated import FedAvgStrategy, FedAdamStrategy, SiteUpdate
from siteflow.strategies.federated.robust import build_rule

REFERENCE = {"w": torch.zeros(2), "n": torch.tensor(0)}
STATES = [
    {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)},
    {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(5)},
    {"w": torch.tensor([100.0, -50.0]), "n": torch.tensor(9)},
]
SITES = ["a", "b", "c"]


def combine(options: dict, weights=(1 / 3, 1 / 3, 1 / 3), states=STATES) -> dict:
    return build_rule(options).combine(1, SITES[: len(states)], states, list(weights), REFERENCE)


def test_median_by_hand():
    out = combine({"name": "median"})
    assert torch.equal(out["w"], torch.tensor([3.0, 2.0])) and out["n"].item() == 5
    even = combine({"name": "median"}, weights=(0.5, 0.5), states=STATES[:2])  # the mean of the two middle values
    assert torch.equal(even["w"], torch.tensor([2.0, 4.0]))


def test_trimmed_mean_by_hand():
    five = [{"w": torch.tensor([float(v)]), "n": torch.tensor(v)} for v in (1, 2, 3, 4, 1000)]
    rule = build_rule({"name": "trimmed_mean", "beta": 0.2})
    out = rule.combine(1, list("abcde"), five, [0.2] * 5, {"w": torch.zeros(1), "n": torch.tensor(0)})
    assert out["w"].item() == pytest.approx((2 + 3 + 4) / 3) and out["n"].item() == 3
    assert torch.equal(combine({"name": "trimmed_mean", "beta": 0.0})["w"], torch.tensor([104 / 3, -42 / 3]))


def test_krum_keeps_the_update_closest_to_its_neighbours_and_logs_the_others(caplog):
    with caplog.at_level(logging.WARNING):
        out = combine({"name": "krum", "byzantine": 0})
    assert torch.equal(out["w"], torch.tensor([1.0, 2.0]))  # a and b are each other's nearest (20); tie: the first
    assert "krum left out b, c (kept a)" in caplog.text
    multi = combine({"name": "krum", "byzantine": 0, "select": 2}, weights=(0.25, 0.25, 0.5))
    assert torch.equal(multi["w"], torch.tensor([2.0, 4.0])) and multi["n"].item() == 3  # a and b, renormalised


def test_clipped_mean_bounds_each_update_by_the_median_norm(caplog):
    with caplog.at_level(logging.WARNING):
        out = combine({"name": "clipped_mean"})
    # norms sqrt(5), sqrt(45), sqrt(12500): c is scaled to sqrt(45), i.e. (6, -3)
    assert torch.allclose(out["w"], torch.tensor([10 / 3, 5 / 3]))
    assert "site c's update scaled from norm 111.8 to 6.708" in caplog.text


@pytest.mark.parametrize(
    "options, message",
    [
        ({"name": "medain"}, "unknown robust aggregation rule 'medain'; did you mean 'median'"),
        ({"beta": 0.1}, "needs a rule's name"),
        ({"name": "trimmed_mean", "beta": 0.5}, r"trimmed_mean: beta must be in \[0, 0.5\)"),
        ({"name": "krum", "byzantine": -1}, "byzantine must be an integer of at least 0"),
        ({"name": "clipped_mean", "factor": 0}, "factor must be positive"),
    ],
)
def test_a_bad_rule_is_refused_at_validation_naming_the_key(tmp_path, options, message):
    path = tiny_config(tmp_path, "fedavg", common={"strategy": {"kwargs": {"robust": options}}})
    with pytest.raises(ConfigError, match=message) as refused:
        load_config(path)
    assert "common.strategy.kwargs.robust" in str(refused.value)


def test_robust_and_central_dp_are_refused_together():
    with pytest.raises(OptionError, match="robust: central_dp"):
        FedAvgStrategy(robust={"name": "median"}, weighting="equal", central_dp={"noise_multiplier": 1.0})


def test_a_server_optimiser_steps_along_the_robust_aggregate():
    strategy = FedAdamStrategy(robust={"name": "median"}, server_lr=1.0, beta1=0.0, beta2=0.0, tau=1.0, initial_v=0.0)
    strategy.prepare_server(torch.nn.Linear(1, 1), ["a", "b", "c"])
    start = {"weight": torch.zeros(1, 1), "bias": torch.zeros(1)}
    updates = [SiteUpdate(site, {"weight": torch.full((1, 1), v), "bias": torch.full((1,), v)}, 10) for site, v in zip("abc", (1.0, 2.0, 900.0))]
    out = strategy.aggregate(1, start, updates)
    # delta = median = 2; m = 2, v = 4: x + 1 * 2 / (2 + 1)
    assert torch.allclose(out["weight"], torch.tensor([[2 / 3]]))


def test_claimed_counts_are_capped_by_the_enrolment(caplog):
    strategy = FedAvgStrategy(enrolled_samples={"a": 10, "b": 30})
    updates = [SiteUpdate("a", {"w": torch.tensor([0.0])}, CLAIMED), SiteUpdate("b", {"w": torch.tensor([4.0])}, 30)]
    with caplog.at_level(logging.WARNING):
        out = strategy.aggregate(2, {"w": torch.zeros(1)}, updates)
    assert out["w"].item() == pytest.approx(3.0)  # (10 * 0 + 30 * 4) / 40
    assert f"round 2: site a claims {CLAIMED} training samples, enrolled with 10: counted as 10" in caplog.text
    with pytest.raises(OptionError, match=r"enrolled_samples: must declare every site.*missing \['c'\], unknown none"):
        strategy.enrolment.check_sites(["a", "b", "c"])
    with pytest.raises(OptionError, match="enrolled_samples: a: the declared count must be a positive integer"):
        FedAvgStrategy(enrolled_samples={"a": 0})


POISONED_CASES = {
    "fedavg": {},
    "median": {"robust": {"name": "median"}},
    "trimmed_mean": {"robust": {"name": "trimmed_mean", "beta": 0.2}},
    "krum": {"robust": {"name": "krum", "byzantine": 1}},
    "multi_krum": {"robust": {"name": "krum", "byzantine": 1, "select": 3}},
    "clipped_mean": {"robust": {"name": "clipped_mean"}, "enrolled_samples": {f"site{i}": 6 for i in range(1, 6)}},
}


def poisoned_run(folder, data, options: dict, *, poisoned: bool = True) -> dict[str, float]:
    """Final Dice per site of a FedAvg of five tiny sites (data generated in ``data``), site5
    poisoned (or honest)."""
    folder.mkdir()
    config = load_config(tiny_config(
        folder, "fedavg", sites=5,
        common={
            "dataset": {"kwargs": {"root_path": str(data)}},
            "strategy": {"kwargs": {"rounds": 5, "local_epochs": 3, **options}},
        },
    ))
    strategy = (PoisonedFedAvg if poisoned else FedAvgStrategy)(**config.strategy.kwargs)
    run = ExperimentRun(config, folder / "run", strategy=strategy)
    run.execute()
    final = run.folder.results[-1]
    return {site: values["dice"] for site, values in final.values.items()}


@pytest.mark.slow
def test_one_poisoned_site_of_five_breaks_fedavg_and_no_robust_rule(tmp_path):
    """The table of docs/results/robustness.md: run with ``-s`` to print it."""
    honest = poisoned_run(tmp_path / "honest", tmp_path / "data", {}, poisoned=False)
    clean = sum(honest[f"site{i}"] for i in range(1, 5)) / 4
    print(f"\nno poison, fedavg: mean Dice of the honest sites {clean:.3f}")
    for case, options in POISONED_CASES.items():
        dice = poisoned_run(tmp_path / case, tmp_path / "data", options)
        mean = sum(dice[f"site{i}"] for i in range(1, 5)) / 4
        print(f"{POISONED} poisoned, {case}: mean Dice of the honest sites {mean:.3f}")
        if case == "fedavg":
            assert mean < 0.1 * clean, f"the poison did not break FedAvg ({mean:.3f} vs {clean:.3f})"
        elif case == "clipped_mean":  # bounds the poison's step (to the median norm), does not drop it
            assert mean > 0.4 * clean, f"{case} did not bound the poison ({mean:.3f} vs {clean:.3f})"
        else:
            assert mean > 0.9 * clean, f"{case} did not resist the poison ({mean:.3f} vs {clean:.3f})"


def test_robust_aggregation_is_refused_under_secure_aggregation_naming_the_key():
    from siteflow.deploy.flower.secure import check_strategy

    with pytest.raises(ValueError, match=r"secure-aggregation=true: common.strategy.kwargs.robust needs each site's update"):
        check_strategy(FedAvgStrategy(robust={"name": "median"}), "fedavg")


def test_a_sample_count_must_be_a_positive_whole_finite_number():
    from siteflow.deploy.flower.server import sample_count

    assert sample_count(12) == 12 and sample_count(12.0) == 12
    for bad in (float("inf"), float("nan"), 2.5, 0, -3, True, "12"):
        with pytest.raises(ValueError, match="is not a positive whole number"):
            sample_count(bad)


def test_test_results_outside_their_range_are_left_out_naming_the_site(tmp_path, caplog, monkeypatch):
    from flwr.app import MetricRecord, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from siteflow.deploy.flower.protocol import TESTED, RunSettings
    from siteflow.deploy.flower.server import FederatedServer
    from siteflow.metrics.ranges import out_of_range
    from test_federated_flower import QueryGrid

    for key in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, key, 1)
    config = load_config(tiny_config(tmp_path, "fedavg", sites=3))
    server = FederatedServer(ExperimentRun(config, tmp_path / "run"), RunSettings(config=str(tmp_path / "fedavg.yaml")))
    server.sites.connected(QueryGrid({1: 1, 2: 2, 3: 3}))
    good = {"dice": 0.5, "dice_sample": 0.5, "hd95": float("inf"), "kappa": -0.2}
    answers = {
        1: RecordDict({TESTED: MetricRecord(good)}),
        2: RecordDict({TESTED: MetricRecord({**good, "dice": 1e9})}),
        3: RecordDict({TESTED: MetricRecord({**good, "dice_sample": float("nan")})}),
    }
    server._record("round1", answers)
    assert list(server.run.folder.results[-1].values) == ["site1"]
    assert "round1: site site2 sent impossible test results (dice = 1000000000.0 is outside [0, 1]): left out" in caplog.text
    assert "round1: site site3 sent impossible test results (dice_sample is NaN): left out" in caplog.text
    assert out_of_range("dice_optic_cup", -0.1) == "dice_optic_cup = -0.1 is outside [0, 1]"
    assert out_of_range("auroc_edema", float("nan")) is None and out_of_range("hd95", -1.0) is not None


@pytest.mark.slow
def test_a_robust_rule_on_flower_gives_the_simulated_global_weights(tmp_path):
    from flower_local import simulated_and_deployed
    from siteflow.core.atomic import load_weights

    options = {"rounds": 2, "robust": {"name": "trimmed_mean", "beta": 0.34}, "enrolled_samples": {f"site{i}": 6 for i in (1, 2, 3)}}
    config = tiny_config(tmp_path, "fedavg", sites=3, common={"strategy": {"kwargs": options}})
    simulated, deployed = simulated_and_deployed(tmp_path, config, sites=3)  # the site matrices equal, row by row
    final = [run.folder.checkpoints / "global" / "final.safetensors" for run in (simulated, deployed)]
    expected, actual = (load_weights(path) for path in final)
    assert all(torch.equal(actual[name], expected[name]) for name in expected)
    saved, _ = deployed.load_state("global/round_state")
    assert any(not torch.equal(saved[f"global/{name}"], load_weights(deployed.folder.checkpoints / "initial.safetensors")[name]) for name in expected)
