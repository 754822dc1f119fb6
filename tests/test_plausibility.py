"""Impossible values in what arrives (a hand-over file, a federated update) are refused with
the tensor named; a hand-over whose chain contradicts the config is refused."""

from __future__ import annotations

import pytest
import torch

from siteflow.core.plausibility import MAX_GROWTH, implausible
from siteflow.handover import HandoverError, read_handover, write_handover
from siteflow.core.types import SiteRecord
from siteflow.strategies.federated import FedAvgStrategy, SiteUpdate

REFERENCE = {
    "conv.weight": torch.full((2, 2), 0.5),
    "bn.running_mean": torch.zeros(2),
    "bn.running_var": torch.ones(2),
    "bn.num_batches_tracked": torch.tensor(0),
}


def trained(**changes) -> dict[str, torch.Tensor]:
    return {**{name: tensor.clone() for name, tensor in REFERENCE.items()}, **changes}


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"bn.running_var": torch.tensor([1.0, -0.5])}, "'bn.running_var' is a variance below zero (-0.5)"),
        ({"bn.num_batches_tracked": torch.tensor(-3)}, "'bn.num_batches_tracked' is a counter below zero (-3)"),
        ({"conv.weight": torch.full((2, 2), 1e7)}, "'conv.weight' reaches a magnitude of 1e+07, beyond 1e+06, which training does not produce"),
        ({"bn.running_var": torch.tensor([1.0, 1e13])}, "'bn.running_var' reaches a magnitude of 1e+13, beyond 1e+12, which training does not produce"),
    ],
)
def test_impossible_values_are_named(changes, reason):
    assert implausible(trained(**changes), REFERENCE) == reason


def test_what_training_produces_passes():
    assert implausible(trained(**{"conv.weight": torch.full((2, 2), -0.9 * MAX_GROWTH), "bn.running_var": torch.tensor([4e6, 1e-8]),
                                  "bn.running_mean": torch.tensor([-1500.0, 900.0]), "bn.num_batches_tracked": torch.tensor(12)}), REFERENCE) is None


def test_a_federated_update_with_a_negative_variance_is_left_out_naming_the_tensor():
    strategy = FedAvgStrategy()
    update = SiteUpdate("site3", trained(**{"bn.running_var": torch.tensor([0.3, -1.0])}), 12)
    assert strategy.check_update(update, REFERENCE, set(REFERENCE)) == "'bn.running_var' is a variance below zero (-1)"
    assert strategy.check_update(SiteUpdate("site3", trained(), 12), REFERENCE, set(REFERENCE)) is None


def write(path, weights, chain):
    write_handover(path, weights, strategy="sequential", model_name="unet", model_kwargs={}, sites=chain)
    return path


CHAIN = [SiteRecord(1, "site1", 10, "2025-01-01T00:00:00+00:00")]
NAMES = {1: "site1", 2: "site2"}


def test_a_handover_with_impossible_weights_is_refused_naming_the_tensor(tmp_path):
    path = write(tmp_path / "h.safetensors", trained(**{"bn.running_var": torch.tensor([1.0, -2.0])}), CHAIN)
    with pytest.raises(HandoverError, match=r"the weights cannot come from training: 'bn.running_var' is a variance below zero \(-2\)"):
        read_handover(path, reference=REFERENCE, site_names=NAMES)
    good = write(tmp_path / "good.safetensors", trained(), CHAIN)
    weights, _ = read_handover(good, reference=REFERENCE, site_names=NAMES)
    assert torch.equal(weights["conv.weight"], REFERENCE["conv.weight"])


def test_a_handover_chain_that_contradicts_the_config_is_refused(tmp_path):
    renamed = write(tmp_path / "renamed.safetensors", trained(), [SiteRecord(1, "hospital_x", 10, "2025-01-01T00:00:00+00:00")])
    with pytest.raises(HandoverError, match="site 1 of the chain is task 1 named 'hospital_x'; the config names it 'site1'"):
        read_handover(renamed, site_names=NAMES)
    foreign = write(tmp_path / "foreign.safetensors", trained(), [SiteRecord(9, "site9", 10, "2025-01-01T00:00:00+00:00")])
    with pytest.raises(HandoverError, match=r"site 1 of the chain is task 9 \(site9\), which the config does not list"):
        read_handover(foreign, site_names=NAMES)
