"""Personalised federated learning: ditto (a personal model per site, regularised towards the
global one, kept and tested at its site) and fedper (declared layers stay at each site)."""

from __future__ import annotations

import pytest
import torch

from experiments import tiny_config
from siteflow.config import ConfigError, load_config
from siteflow.core.atomic import load_weights
from siteflow.engine.runner import ExperimentRun
from siteflow.strategies.federated import ROUND_STATE, FedAvgStrategy, FederatedSite, SiteStore
from siteflow.strategies.federated.store import LOCAL


def run_of(folder, strategy: str, **kwargs) -> ExperimentRun:
    folder.mkdir(exist_ok=True)
    config = load_config(tiny_config(folder, strategy, sites=2, common={"strategy": {"kwargs": kwargs}}))
    return ExperimentRun(config, folder / "run")


def floating(weights: dict[str, torch.Tensor]) -> list[str]:
    return [name for name, tensor in weights.items() if tensor.is_floating_point() and "running" not in name]


def test_ditto_keeps_a_personal_model_at_each_site_and_tests_each_site_with_it(tmp_path):
    run = run_of(tmp_path, "ditto", rounds=2, lam=0.5)
    summary = run.execute()
    assert summary["stages"] == ["round1", "round2"]
    saved, _ = run.load_state(ROUND_STATE)
    global_weights = {k[len("global/"):]: v for k, v in saved.items() if k.startswith("global/")}
    personal = {site: SiteStore(run.site_folder(site)).load(LOCAL, before=3) for site in ("site1", "site2")}
    assert all(set(model) == set(global_weights) for model in personal.values())  # a whole model each
    name = floating(global_weights)[0]
    assert not torch.equal(personal["site1"][name], global_weights[name])
    assert not torch.equal(personal["site1"][name], personal["site2"][name])
    solver = run.strategy.solver_from(run.task)
    for site in ("site1", "site2"):
        recorded = next(row for row in run.results if row.stage == "round2").values[site]["dice"]
        assert run.evaluate(personal[site], solver, sites=[site])[site]["dice"] == pytest.approx(recorded)
        own = load_weights(run.folder.checkpoints / "global" / f"final_{site}.safetensors")
        assert all(torch.equal(own[k], personal[site][k]) for k in own)


def test_ditto_sends_fedavg_s_update_and_its_lambda_pulls_the_personal_model_to_the_global_one(tmp_path):
    distances = {}
    for lam in (0.0, 100.0):
        run = run_of(tmp_path / f"lam{lam}", "ditto", rounds=1, local_epochs=4, lam=lam)
        site_run = run.config.site_runs[0]
        site = FederatedSite(run, site_run)
        x = run.start(site_run, lambda: run.strategy.build_network(run.task)).weights
        update = run.strategy.site_step(site, x, 1)
        fedavg = FedAvgStrategy(rounds=1, local_epochs=4).local_update(site, x, 1)
        assert all(torch.equal(update.weights[k], fedavg.weights[k]) for k in x), "the global model trains as in FedAvg"
        personal = SiteStore(run.site_folder(site_run.task_name)).load(LOCAL, before=2)
        distances[lam] = sum((personal[k] - x[k]).pow(2).sum() for k in floating(x))
    assert distances[100.0] < 0.5 * distances[0.0]


def test_fedper_keeps_the_declared_layers_at_each_site(tmp_path):
    run = run_of(tmp_path, "fedper", rounds=2, local_epochs=3, personal_layers=["head"])  # one Adam step moves every weight by lr: sites differ after several
    run.execute()
    local_keys = run.strategy.local_keys(run.task)
    assert local_keys and all(k.startswith("head.") for k in local_keys)
    saved, _ = run.load_state(ROUND_STATE)
    global_weights = {k[len("global/"):]: v for k, v in saved.items() if k.startswith("global/")}
    initial = load_weights(run.folder.checkpoints / "initial.safetensors")
    assert all(torch.equal(global_weights[k], initial[k]) for k in local_keys), "a personal layer was averaged"
    shared = next(k for k in floating(global_weights) if k not in local_keys)
    assert not torch.equal(global_weights[shared], initial[shared])
    kept = {site: SiteStore(run.site_folder(site)).load(LOCAL, before=3) for site in ("site1", "site2")}
    assert set(kept["site1"]) == local_keys
    head = next(k for k in sorted(local_keys) if k.endswith("weight"))
    assert not torch.equal(kept["site1"][head], kept["site2"][head])
    own = load_weights(run.folder.checkpoints / "global" / "final_site2.safetensors")
    assert torch.equal(own[head], kept["site2"][head]) and torch.equal(own[shared], global_weights[shared])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"personal_layers": ["hed"]}, "common.strategy.kwargs.personal_layers: ['hed'] name no module of UNet (its top-level modules: decoder, encoder, head)"),
        ({"personal_layers": ["head", "encoder.99"]}, "common.strategy.kwargs.personal_layers: ['encoder.99'] name no module of UNet"),
        ({"personal_layers": []}, "common.strategy.kwargs.personal_layers: must name at least one module of the model"),
        ({}, "common.strategy.kwargs.personal_layers: required option is missing"),
    ],
)
def test_a_personal_layer_that_names_no_module_is_one_config_error(tmp_path, kwargs, message):
    with pytest.raises(ConfigError) as error:
        load_config(tiny_config(tmp_path, "fedper", common={"strategy": {"kwargs": kwargs}}))
    assert message in str(error.value)


def test_ditto_refuses_a_negative_lambda(tmp_path):
    with pytest.raises(ConfigError, match="common.strategy.kwargs: lam must be non-negative, got -1"):
        load_config(tiny_config(tmp_path, "ditto", common={"strategy": {"kwargs": {"lam": -1}}}))


@pytest.mark.slow
def test_ditto_on_flower_tests_each_site_with_the_personal_model_on_its_own_disk(tmp_path):
    from flower_local import simulated_and_deployed

    config = tiny_config(tmp_path, "ditto", sites=2, common={"strategy": {"kwargs": {"rounds": 2, "lam": 0.5}}})
    simulated, deployed = simulated_and_deployed(tmp_path, config)
    assert deployed.load_state(ROUND_STATE)[1]["digests"] == simulated.load_state(ROUND_STATE)[1]["digests"]
    for simulated_row, deployed_row in zip(simulated.results, deployed.results, strict=True):
        for site in ("site1", "site2"):
            assert deployed_row.values[site]["dice"] == pytest.approx(simulated_row.values[site]["dice"], abs=1e-6)
    for task_id, site in ((1, "site1"), (2, "site2")):
        hospital = ExperimentRun(load_config(config, task_ids=[task_id]), tmp_path / f"hospital{task_id}" / "ditto" / "t" / site)
        personal = SiteStore(hospital.site_folder(site)).load(LOCAL, before=3)
        expected = SiteStore(simulated.site_folder(site)).load(LOCAL, before=3)
        assert all(torch.equal(personal[k], expected[k]) for k in expected)
