"""The poisoned FedAvg of ``tests/poisoning.py`` registered as the strategy ``poisoned_fedavg``,
through the ``siteflow.plugins`` entry point ``poisoned = poisoned`` (the deployed
fault-injection test declares it, so that every process it starts can build the strategy)."""

from __future__ import annotations

from poisoning import PoisonedFedAvg

from siteflow.core.registry import STRATEGIES

STRATEGIES.register("poisoned_fedavg")(PoisonedFedAvg)
