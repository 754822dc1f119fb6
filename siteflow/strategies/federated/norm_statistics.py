"""FedBN's normalisation statistics at test time: re-estimated at each site after averaging.

Under FedBN a site's normalisation layers stay at the site, the other weights are averaged.
The running statistics a site's layers gathered in its round describe its features under the
weights it trained itself; the server then replaces those weights by the average, and the
site is tested (and trains again) with the averaged weights under statistics of other ones.
A site whose images differ most from the others' (CHASE_DB1 among DRIVE and STARE: larger,
darker, a large black surround) sees its features move most, and its stale statistics can
leave it almost unsegmented (issue 30). With ``norm_statistics: reestimated`` the site
measures its statistics anew with the weights it will use, on one pass over its own training
data (its training batches, drawn as training draws them, without gradients), every time it
combines the global weights with the layers it kept: before testing a round's model and
before training the next round. Nothing leaves the site.
"""

from __future__ import annotations

from typing import Literal

from torch import nn

from siteflow.config import SiteRun
from siteflow.core.types import Weights
from siteflow.datasets.pooling import build_dataset, loader
from siteflow.models.norm_statistics import batch_norm_layers, reestimate_batch_norm

NormStatistics = Literal["running", "reestimated"]


def reestimated_statistics(network: nn.Module, weights: Weights, site_run: SiteRun, *, seed: int) -> Weights:
    """``weights`` with the running statistics of ``network``'s batch-normalisation layers
    re-estimated on one pass over ``site_run``'s training split (batches of its training batch
    size, drawn with ``seed``); every other tensor unchanged. ``weights`` themselves when the
    network has no batch normalisation (nothing to re-estimate)."""
    if not batch_norm_layers(network):
        return weights
    network.load_state_dict(weights)
    data = loader(build_dataset(site_run.site, "train"), batch_size=site_run.train.batch_size, num_workers=0, shuffle=True, seed=seed)
    reestimate_batch_norm(network, lambda model: [model(batch["image"]) for batch in data])
    measured = network.state_dict()
    return {name: measured[name].detach().clone() if name.endswith(STATISTICS) else tensor for name, tensor in weights.items()}


STATISTICS = ("running_mean", "running_var", "num_batches_tracked")
"""The buffers of a batch-normalisation layer that :func:`reestimated_statistics` replaces."""
