"""Relay learning: the merge, the chain's codes and counts, frozen old networks, replay, and a
deployed relay over three processes that ends where the simulated one does."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from experiments import deploy_site_by_site, tiny_config
from siteflow.core.atomic import load_weights
from siteflow.config import load_config
from siteflow.handover import read_manifest
from siteflow.engine.runner import ExperimentRun
from siteflow.strategies.relay import RelayStrategy, merge_by_samples

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
RELAY = {"strategy": {"kwargs": {"label_generator_channels": 32, "image_generator_channels": 8, "discriminator_channels": 8}}}


def test_merge_weights_by_sample_counts():
    new, old = nn.Linear(2, 1), nn.Linear(2, 1)
    with torch.no_grad():
        new.weight.copy_(torch.tensor([[1.0, 2.0]]))
        old.weight.copy_(torch.tensor([[5.0, 10.0]]))
        new.bias.fill_(0.0)
        old.bias.fill_(4.0)
    merge_by_samples(new, old, samples_here=30, samples_before=10)  # (30 * new + 10 * old) / 40
    assert torch.allclose(new.weight, torch.tensor([[2.0, 4.0]]))
    assert torch.allclose(new.bias, torch.tensor([1.0]))
    merge_by_samples(new, old, samples_here=30, samples_before=0)  # nothing seen before: unchanged
    assert torch.allclose(new.weight, torch.tensor([[2.0, 4.0]]))


class CapturingRelay(RelayStrategy):
    """The real relay strategy, keeping the learner of every site for inspection."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.learners = {}

    def make_learner(self, context, network, site_runs, carried, replay_weights=None):
        learner = super().make_learner(context, network, site_runs, carried, replay_weights=replay_weights)
        self.learners[site_runs[0].task_name] = (learner, carried)
        return learner


def simulated(folder: Path) -> tuple[ExperimentRun, CapturingRelay]:
    config = load_config(tiny_config(folder, "relay", sites=3, common={**RELAY, "train": {"epochs": 2}}))
    runner = ExperimentRun(config, folder / "run")
    runner.strategy = CapturingRelay(**config.strategy.kwargs)
    runner.execute()
    return runner, runner.strategy


@pytest.fixture(scope="module")
def relay_run(tmp_path_factory):
    return simulated(tmp_path_factory.mktemp("relay"))


@pytest.mark.slow
def test_codes_and_sample_counts_come_from_the_chain(relay_run):
    runner, strategy = relay_run
    learner, carried = strategy.learners["site3"]
    assert [s.task_name for s in carried.sites] == ["site1", "site2"]
    assert learner.position.site_code == 2 and learner.previous_codes.tolist() == [0, 1]
    assert learner.position.samples_before == 4 + 4 and learner.position.samples_here == 4
    first, _ = strategy.learners["site1"]
    assert first.old is None and first.previous_codes.numel() == 0


def test_old_networks_are_the_received_ones_frozen(relay_run):
    runner, strategy = relay_run
    learner, carried = strategy.learners["site3"]
    received = carried.weights
    old = learner.old.state_dict()
    assert all(torch.equal(old[name], received[name]) for name in received)
    assert not any(p.requires_grad for p in learner.old.parameters())
    assert not learner.old.training
    final = load_weights(runner.folder.checkpoints / "task_3" / "final.safetensors")
    assert any(not torch.equal(final[name], received[name]) for name in final if name.startswith("solver."))
    assert bool(learner.merged), "the midpoint merge did not happen"


def test_replay_draws_label_maps_and_images_of_the_requested_sites(relay_run):
    runner, _ = relay_run
    network = runner.strategy.build_network(runner.task)
    network.load_state_dict(load_weights(runner.folder.checkpoints / "task_3" / "final.safetensors"))
    network.eval()
    torch.manual_seed(0)
    images, labels = network.replay(torch.tensor([0, 1, 2, 0]), num_classes=3)
    assert images.shape == (4, 3, 32, 32) and labels.shape == (4, 32, 32)
    assert images.min() >= -1 and images.max() <= 1
    assert labels.dtype == torch.int64 and 0 <= labels.min() and labels.max() <= 2


def test_the_hand_over_carries_solver_and_generators_and_the_chain(relay_run):
    runner, _ = relay_run
    path = runner.folder.checkpoints / "task_3" / "handover.safetensors"
    manifest = read_manifest(path)
    assert manifest.strategy == "relay"
    assert [(s.task_id, s.num_samples) for s in manifest.sites] == [(1, 4), (2, 4), (3, 4)]
    names = load_weights(path).keys()
    assert {name.split(".")[0] for name in names} == {"solver", "label_generator", "image_generator"}
    weight_bytes = sum(t.numel() * t.element_size() for t in load_weights(path).values())
    assert path.stat().st_size <= 1.05 * weight_bytes


@pytest.mark.slow
def test_a_deployed_relay_in_three_processes_ends_with_the_simulated_weights(relay_run, tmp_path):
    runner, _ = relay_run
    config = tiny_config(tmp_path, "relay", sites=3, common={**RELAY, "train": {"epochs": 2}})
    received = deploy_site_by_site(config, tmp_path, [1, 2, 3], env=ENV)
    deployed = load_weights(received)
    simulated_weights = load_weights(runner.folder.checkpoints / "task_3" / "handover.safetensors")
    assert deployed.keys() == simulated_weights.keys()
    for name in deployed:
        assert torch.allclose(deployed[name], simulated_weights[name], rtol=1e-5, atol=1e-6), name
    assert [s.task_id for s in read_manifest(received).sites] == [1, 2, 3]
