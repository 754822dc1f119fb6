"""The running statistics of a network's batch-normalisation layers, re-estimated on data.

A BatchNorm layer normalises with the statistics of its batch while it trains, and with its
running averages at test time. The running averages describe the data and weights they were
gathered with: after the weights change without them (FedBN: a site's layers over newly
averaged shared weights) or when test inputs differ from the training batches (training
patches centred on foreground against whole images with a black surround), they no longer
describe what the layer sees at test time. :func:`reestimate_batch_norm` measures them anew.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def batch_norm_layers(network: nn.Module) -> list[_BatchNorm]:
    """The layers of ``network`` that keep running statistics (BatchNorm1d/2d/3d with
    ``track_running_stats``; instance norm keeps none by default)."""
    return [module for module in network.modules() if isinstance(module, _BatchNorm) and module.track_running_stats]


@torch.no_grad()
def reestimate_batch_norm(network: nn.Module, feed: Callable[[nn.Module], object]) -> int:
    """Replace the running mean and variance of every layer of :func:`batch_norm_layers` by
    their plain average over the batches that ``feed(network)`` passes through ``network``
    (the network in training mode, without gradients; its weights are unchanged). Returns how
    many batches the first layer saw; the network's mode and the layers' momenta are
    restored. With no layer to re-estimate, ``feed`` is not called and 0 is returned.

    Raises ValueError when ``feed`` passes no batch (the statistics would be left reset)."""
    layers = batch_norm_layers(network)
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    training = network.training
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # a cumulative average over the batches fed
    network.train()
    try:
        feed(network)
    finally:
        network.train(training)
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    batches = int(layers[0].num_batches_tracked)
    if batches == 0:
        raise ValueError("no batch was fed to re-estimate the normalisation statistics: the site has no training data")
    return batches
