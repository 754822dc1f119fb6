"""``keep_optimizer_state``: a federated site's optimiser resumes its state from its previous
round, kept on the site's own disk."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from experiments import tiny_config
from siteflow.config import load_config
from siteflow.engine.runner import ExperimentRun
from siteflow.strategies.federated import SiteStore
from siteflow.strategies.federated.optimizer_state import flatten_state, unflatten_state


def adam_after_two_steps() -> tuple[nn.Linear, torch.optim.Adam]:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.ones(4, 3)).square().sum().backward()
        optimizer.step()
    return model, optimizer


def test_the_flattened_state_round_trips_into_a_fresh_optimiser_and_steps_identically():
    model, optimizer = adam_after_two_steps()
    flat = flatten_state(optimizer.state_dict()["state"], prefix="0.")
    assert set(flat) == {f"0.{i}.{name}" for i in (0, 1) for name in ("step", "exp_avg", "exp_avg_sq")}
    assert flat["0.0.step"].item() == 2.0

    twin = nn.Linear(3, 2)
    twin.load_state_dict(model.state_dict())
    fresh = torch.optim.Adam(twin.parameters(), lr=0.1)
    state = fresh.state_dict()
    state["state"] = unflatten_state(flat, prefix="0.", param_count=2)
    fresh.load_state_dict(state)
    for opt, net in ((optimizer, model), (fresh, twin)):
        opt.zero_grad()
        net(torch.ones(4, 3)).square().sum().backward()
        opt.step()
    torch.testing.assert_close(twin.weight, model.weight, rtol=0, atol=0)


def test_a_kept_state_for_another_model_is_refused():
    _, optimizer = adam_after_two_steps()
    flat = flatten_state(optimizer.state_dict()["state"])
    with pytest.raises(ValueError, match="names parameter 1, but the optimiser has 1: the model changed"):
        unflatten_state(flat, param_count=1)


@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.slow
def test_a_site_s_adam_steps_count_on_across_rounds_only_when_kept(tmp_path, keep):
    # 4 training samples a site in batches of 2, one epoch a round: 2 optimiser steps a round
    common = {"strategy": {"kwargs": {"rounds": 3, "keep_optimizer_state": keep}}, "train": {"batch_size": 2}}
    run = ExperimentRun(load_config(tiny_config(tmp_path, "fedavg", sites=2, common=common)), tmp_path / "run")
    run.execute()
    for site in ("site1", "site2"):
        store = SiteStore(run.site_folder(site))
        if not keep:
            assert store.rounds("optimizer_global") == []
            continue
        assert store.rounds("optimizer_global") == [2, 3]  # the last two rounds' (a re-run of round 3 reads round 2's)
        kept = store.load("optimizer_global", before=4)
        steps = {value.item() for key, value in kept.items() if key.endswith(".step")}
        assert steps == {6.0}  # 3 rounds x 2 steps: every round went on from the last
        assert store.load("optimizer_global", before=3)["0.0.step"].item() == 4.0
