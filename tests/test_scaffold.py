"""SCAFFOLD built in: the control-variate updates by hand, the corrected local step measured
on a real site step, the variates kept at the sites, and SGD required. (A killed run resuming
to the same weights: tests/test_resume.py.)"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from experiments import tiny_config
from siteflow.config import load_config
from siteflow.core.registry import STRATEGIES
from siteflow.engine.runner import ExperimentRun
from siteflow.strategies.base import SetupRefused
from siteflow.strategies.federated import ROUND_STATE, FederatedSite, SiteStore, SiteUpdate
from siteflow.strategies.federated.scaffold import CONTROL, SITE_CONTROL, new_site_control

SGD = {"optimizer": {"name": "SGD", "kwargs": {"lr": 0.1}}}


def scaffold_run(folder, *, sites: int = 2, train: dict = SGD, **kwargs) -> ExperimentRun:
    folder.mkdir(exist_ok=True)
    config = load_config(tiny_config(folder, "scaffold", sites=sites, common={"strategy": {"kwargs": kwargs}, "train": train}))
    return ExperimentRun(config, folder / "run")


def test_the_site_control_variate_update_by_hand():
    own = {"w": torch.tensor([0.5, -1.0])}  # c_i
    server = {"w": torch.tensor([0.25, 0.25])}  # c
    start, end = {"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([0.8, 2.6])}  # x, y after K = 4 steps at lr 0.05
    new = new_site_control(own, server, start, end, lr_sum=4 * 0.05)
    # c_i - c + (x - y) / (K lr) = [0.5 - 0.25 + 0.2 / 0.2, -1 - 0.25 - 0.6 / 0.2]
    assert torch.allclose(new["w"], torch.tensor([1.25, -4.25]))


def test_the_server_averages_the_weights_and_adds_the_control_deltas_over_all_sites_by_hand():
    strategy = STRATEGIES.get("scaffold")(weighting="equal")
    strategy.prepare_server(nn.Linear(2, 1, bias=False), ["a", "b", "c"])  # N = 3; two of them reply
    strategy.load_state_dict({CONTROL + "weight": torch.tensor([[1.0, 1.0]])})  # c after an earlier round
    x = {"weight": torch.tensor([[0.0, 0.0]])}
    assert torch.equal(strategy.configure(2, x)[CONTROL + "weight"], torch.tensor([[1.0, 1.0]]))  # c goes with x
    updates = [
        SiteUpdate("a", {"weight": torch.tensor([[1.0, 2.0]]), CONTROL + "weight": torch.tensor([[0.3, -0.6]])}, 5),
        SiteUpdate("b", {"weight": torch.tensor([[3.0, 4.0]]), CONTROL + "weight": torch.tensor([[0.3, 0.0]])}, 7),
    ]
    new = strategy.aggregate(2, x, updates)
    assert set(new) == {"weight"} and torch.allclose(new["weight"], torch.tensor([[2.0, 3.0]]))
    # c + (1/N) sum of the deltas = [1 + 0.6 / 3, 1 - 0.6 / 3]
    assert torch.allclose(strategy.state_dict()[CONTROL + "weight"], torch.tensor([[1.2, 0.8]]))


def test_a_corrected_local_step_moves_by_minus_lr_times_the_correction_and_the_site_keeps_its_variate(tmp_path):
    run = scaffold_run(tmp_path, local_steps=1)
    strategy, site_run = run.strategy, run.config.site_runs[0]
    site = FederatedSite(run, site_run)
    x = run.start(site_run, lambda: strategy.build_network(run.task)).weights
    names = strategy.controlled(run.task)
    assert names == [name for name, _ in strategy.build_network(run.task).named_parameters()]
    torch.manual_seed(0)
    c = {name: 0.01 * torch.randn_like(x[name]) for name in names}
    plain = strategy.site_step(site, x, 1)  # c = c_i = 0: an uncorrected SGD step
    corrected = strategy.site_step(site, {**x, **{CONTROL + name: c[name] for name in names}}, 1)  # the same batch, c_i = 0
    for name in names:  # y = x - lr (g + c - c_i): the same gradient, moved by -lr c
        assert torch.allclose(corrected.weights[name] - plain.weights[name], -0.1 * c[name], atol=1e-6), name
    kept = SiteStore(run.site_folder(site_run.task_name)).load(SITE_CONTROL, before=2)
    for name in names:  # c_i+ = 0 - c + (x - y) / (1 * 0.1), sent as c_i+ - 0
        expected = -c[name] + (x[name] - corrected.weights[name]) / 0.1
        assert torch.allclose(kept[name], expected, atol=1e-5)
        assert torch.equal(corrected.weights[CONTROL + name], kept[name])
    assert {name for name in plain.weights if name.startswith(CONTROL)} == {CONTROL + name for name in names}


def test_the_server_variate_is_the_mean_of_the_sites_kept_ones_with_sampling_too(tmp_path):
    run = scaffold_run(tmp_path, sites=3, rounds=2, local_steps=2, fraction=0.5)  # two of three sites a round
    summary = run.execute()
    assert summary["stages"] == ["round1", "round2"]
    saved, info = run.load_state(ROUND_STATE)
    server = {k[len("strategy/" + CONTROL):]: v for k, v in saved.items() if k.startswith("strategy/" + CONTROL)}
    assert server and not any(k.startswith(("global/" + CONTROL, CONTROL)) for k in saved)
    kept = [SiteStore(run.site_folder(site)).load(SITE_CONTROL, before=3) or {} for site in ("site1", "site2", "site3")]
    assert sum(bool(k) for k in kept) >= 2  # every sampled site keeps its own variate; none is in the round state
    for name, c in server.items():  # c = (1/N) sum_i c_i: each round adds (1/N) of the sampled sites' deltas
        mean = sum(k.get(name, torch.zeros_like(c)) for k in kept) / 3
        assert torch.allclose(c, mean, atol=1e-5), name


def test_scaffold_refuses_an_optimiser_other_than_plain_sgd(tmp_path):
    for train in ({"optimizer": {"name": "Adam", "kwargs": {"lr": 0.01}}}, {"optimizer": {"name": "SGD", "kwargs": {"lr": 0.1, "momentum": 0.9}}}):
        run = scaffold_run(tmp_path / train["optimizer"]["name"], train=train, rounds=1)
        with pytest.raises(SetupRefused, match="scaffold corrects plain SGD steps .* set common.train.optimizer to SGD without momentum"):
            run.execute()


@pytest.mark.slow
def test_scaffold_on_flower_gives_the_simulated_weights_and_keeps_each_variate_on_its_site_s_disk(tmp_path):
    from flower_local import simulated_and_deployed

    config = tiny_config(tmp_path, "scaffold", sites=2, common={"strategy": {"kwargs": {"rounds": 2}}, "train": SGD})
    simulated, deployed = simulated_and_deployed(tmp_path, config)
    (deployed_state, deployed_info), (simulated_state, simulated_info) = deployed.load_state(ROUND_STATE), simulated.load_state(ROUND_STATE)
    assert deployed_info["digests"] == simulated_info["digests"]
    assert all(torch.equal(deployed_state[k], simulated_state[k]) for k in simulated_state if k.startswith("strategy/" + CONTROL))
    for task_id, site in ((1, "site1"), (2, "site2")):
        hospital = ExperimentRun(load_config(config, task_ids=[task_id]), tmp_path / f"hospital{task_id}" / "scaffold" / "t" / site)
        kept = SiteStore(hospital.site_folder(site)).load(SITE_CONTROL, before=3)
        expected = SiteStore(simulated.site_folder(site)).load(SITE_CONTROL, before=3)
        assert kept.keys() == expected.keys() and all(torch.equal(kept[k], expected[k]) for k in expected)
        assert not SiteStore(deployed.site_folder(site)).rounds(SITE_CONTROL), "a site's variate reached the server's disk"


def test_under_a_robust_rule_one_site_cannot_steer_the_control_variate_by_hand():
    """Median of three sites' control deltas, one of them poisoned (1e6): the variate moves by
    the median times the replying share (3 of 4 sites), where the plain mean follows the poison."""
    deltas = [torch.tensor([[0.3, -0.6]]), torch.tensor([[0.1, 0.0]]), torch.tensor([[1e6, -1e6]])]
    x = {"weight": torch.tensor([[0.0, 0.0]])}
    updates = [SiteUpdate(name, {"weight": torch.tensor([[1.0, 1.0]]), CONTROL + "weight": delta}, 5) for name, delta in zip("abc", deltas)]
    plain, robust = STRATEGIES.get("scaffold")(), STRATEGIES.get("scaffold")(robust={"name": "median"})
    for strategy in (plain, robust):
        strategy.prepare_server(nn.Linear(2, 1, bias=False), ["a", "b", "c", "d"])
        strategy.aggregate(1, x, updates)
    assert plain.state_dict()[CONTROL + "weight"][0, 0] > 1e5
    # median [0.3, -0.6] (per coordinate: [0.1, 0.3, 1e6] -> 0.3; [-1e6, -0.6, 0] -> -0.6), times 3/4
    assert torch.allclose(robust.state_dict()[CONTROL + "weight"], torch.tensor([[0.225, -0.45]]))
