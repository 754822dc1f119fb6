"""FedBN's normalisation statistics at test time (issue 30): re-estimated by each site on its
own training data once the server has averaged the other weights, or the running ones."""

import pytest
import torch
from torch import nn

from experiments import tiny_config
from siteflow.config import load_config
from siteflow.core.atomic import load_weights
from siteflow.datasets.pooling import build_dataset, loader
from siteflow.engine.runner import ExperimentRun
from siteflow.models.norm_statistics import reestimate_batch_norm
from siteflow.strategies.federated.store import SiteStore


def test_reestimated_statistics_are_the_plain_average_over_the_batches_fed():
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2, momentum=0.3))
    network.eval()
    batches = [torch.randn(4, 1, 3, 3) * scale + shift for scale, shift in ((1.0, 0.0), (2.0, 5.0), (0.5, -1.0))]
    assert reestimate_batch_norm(network, lambda model: [model(b) for b in batches]) == 3
    features = [network[0](b).detach() for b in batches]
    means = torch.stack([f.mean(dim=(0, 2, 3)) for f in features])
    variances = torch.stack([f.transpose(0, 1).reshape(2, -1).var(dim=1, unbiased=True) for f in features])
    norm = network[1]
    assert torch.allclose(norm.running_mean, means.mean(0), atol=1e-5)
    assert torch.allclose(norm.running_var, variances.mean(0), atol=1e-5)
    assert norm.momentum == 0.3 and not network.training  # restored
    with pytest.raises(ValueError, match="no batch was fed to re-estimate the normalisation statistics"):
        reestimate_batch_norm(network, lambda model: None)


@pytest.mark.parametrize(
    ("strategy", "model", "message"),
    [
        ({"norm_statistics": "reestimated"}, {},
         "common.strategy.kwargs.norm_statistics: chooses the statistics of FedBN's site-local normalisation layers: set keep_local_norm: true"),
        ({"keep_local_norm": True, "norm_statistics": "refit"}, {},
         "common.strategy.kwargs.norm_statistics: expected 'running' or 'reestimated' or null, got 'refit'"),
        ({"keep_local_norm": True, "norm_statistics": "reestimated"}, {"norm": "instance"},
         "common.strategy.kwargs.norm_statistics: reestimated re-measures batch normalisation statistics, and UNet has no layer that "
         "keeps them (instance, group or layer norm normalise each sample by itself): set norm_statistics: running"),
    ],
)
def test_statistics_the_model_cannot_give_are_refused_at_their_key(tmp_path, strategy, model, message):
    config = tiny_config(tmp_path, "fedavg", common={"strategy": {"kwargs": {"rounds": 1, **strategy}},
                                                     "model": {"kwargs": model}})  # fmt: skip
    with pytest.raises(ValueError) as refused:
        load_config(config)
    assert message in str(refused.value)


@pytest.mark.parametrize("chosen", [{"norm_statistics": "running"}, {}])
def test_fedbn_under_instance_norm_runs_with_running_or_default_statistics(tmp_path, chosen):
    # Instance norm keeps no statistics: the default has nothing to re-estimate (prostate/fedbn).
    config = tiny_config(tmp_path, "fedavg", common={"strategy": {"kwargs": {"keep_local_norm": True, **chosen}},
                                                     "model": {"kwargs": {"norm": "instance"}}})  # fmt: skip
    assert load_config(config).strategy.kwargs.get("norm_statistics") == chosen.get("norm_statistics")


@pytest.mark.slow
def test_each_site_is_tested_with_statistics_measured_under_the_averaged_weights(tmp_path):
    config = load_config(tiny_config(tmp_path, "fedavg", common={"strategy": {"kwargs": {"rounds": 2, "keep_local_norm": True}}}))
    runner = ExperimentRun(config, tmp_path / "run")
    runner.execute()
    strategy, site_run = runner.strategy, config.site_runs[1]
    final = load_weights(runner.folder.checkpoints / "global" / "final.safetensors")
    kept = SiteStore(runner.site_folder("site2")).load("local", before=3)
    own = load_weights(runner.folder.checkpoints / "global" / "final_site2.safetensors")
    name = next(k for k in kept if k.endswith("running_mean"))
    assert not torch.allclose(own[name], kept[name])  # not the running averages gathered in training
    assert all(torch.equal(own[k], kept[k]) for k in kept if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert all(torch.equal(own[k], final[k]) for k in final if k not in kept)
    # The same measurement by hand: the averaged weights with the site's layers, one pass over its training batches.
    network = strategy.build_network(runner.task)
    network.load_state_dict({**final, **kept})
    data = loader(build_dataset(site_run.site, "train"), batch_size=site_run.train.batch_size, num_workers=0, shuffle=True,
                  seed=1000 * 3 + config.seed)  # fmt: skip
    reestimate_batch_norm(network, lambda model: [model(batch["image"]) for batch in data])
    assert torch.allclose(own[name], network.state_dict()[name], atol=1e-6)
