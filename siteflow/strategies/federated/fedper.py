"""fedper: federated averaging with personal layers (Arivazhagan et al., "Federated Learning
with Personalization Layers", 2019)."""

from __future__ import annotations

from typing import Any

from torch import nn

from siteflow.core.errors import OptionError
from siteflow.core.registry import STRATEGIES
from siteflow.strategies.federated.fedavg import FedAvgStrategy
from siteflow.tasks import Task


@STRATEGIES.register("fedper")
class FedPerStrategy(FedAvgStrategy):
    """FedAvg whose declared layers stay at each site: every weight of a module named in
    ``personal_layers`` (or inside one) trains at its site only, is never sent nor averaged,
    and each site is tested with its own (FedAvg's local-weights mechanism, as FedBN's
    normalisation layers and FFL's head; ``keep_local_norm`` adds FedBN's).

    Args:
        personal_layers: module names of the model (``"head"``, ``"decoder.3"``), as
            ``named_modules()`` gives them; one that names no module is refused (at the key
            ``common.strategy.kwargs.personal_layers``).
        **kwargs: the options of fedavg (rounds, local_epochs, keep_local_norm, ...).
    """

    def __init__(self, personal_layers: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not personal_layers:
            raise OptionError("personal_layers", "must name at least one module of the model, e.g. [head]")
        self.personal_layers = list(personal_layers)

    def build_network(self, task: Task) -> nn.Module:
        """The model, once its modules are checked against ``personal_layers`` (the config's
        validation builds it: a wrong name fails before any training)."""
        network = super().build_network(task)
        modules = [name for name, _ in network.named_modules() if name]
        unknown = [name for name in self.personal_layers if name not in modules]
        if unknown:
            tops = sorted({name.split(".")[0] for name in modules})
            raise OptionError(
                "personal_layers", f"{unknown} name no module of {type(network).__name__} (its top-level modules: {', '.join(tops)})"
            )
        return network

    def local_keys(self, task: Task) -> set[str]:
        """The weights of the personal layers (and FedBN's normalisation layers if kept)."""
        network = self.build_network(task)
        prefixes = tuple(f"{name}." for name in self.personal_layers)
        return super().local_keys(task) | {name for name in network.state_dict() if name.startswith(prefixes)}
