"""A site's optimiser state kept from one round to the next, on the site's own disk.

By default every round starts the site's optimiser afresh (Adam's moments at zero), as Flower
and FLamby do. With ``keep_optimizer_state``, a site resumes its moments (and step counts)
where its previous round left them, as the SSL-FL reference does: the per-parameter state
tensors go to the site's :class:`~siteflow.strategies.federated.store.SiteStore` after each
round's fit and come back before the next one. They never travel; a re-run of a round (after
a crash) reads what the site kept before that round. The optimiser's hyper-parameters (the
param groups) come from the config every round, so a learning-rate schedule is not carried.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from siteflow.core.types import Tensors
from siteflow.strategies.federated.store import SiteStore


class KeptOptimizerState(Callback):
    """Restores the optimisers' per-parameter state at the start of a round's fit from what
    the site kept after its last round, and keeps it at the end.

    Args:
        store: the site's store.
        name: the name it is kept under (one per model a site trains in a round).
        round_number: the round being trained.
    """

    def __init__(self, store: SiteStore, name: str, round_number: int) -> None:
        self.store = store
        self.name = name
        self.round_number = round_number

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        kept = self.store.load(self.name, before=self.round_number)
        if kept is None:
            return
        for index, optimizer in enumerate(trainer.optimizers):
            state = optimizer.state_dict()
            state["state"] = unflatten_state(kept, prefix=f"{index}.", param_count=_param_count(optimizer))
            optimizer.load_state_dict(state)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        tensors: Tensors = {}
        for index, optimizer in enumerate(trainer.optimizers):
            tensors.update(flatten_state(optimizer.state_dict()["state"], prefix=f"{index}."))
        self.store.save(self.name, self.round_number, tensors)


def flatten_state(state: dict[int, dict[str, object]], *, prefix: str = "") -> Tensors:
    """An optimiser's ``state_dict()["state"]`` (parameter index -> {name: value}) as flat
    tensors ``{f"{prefix}{index}.{name}": tensor}`` (for safetensors). Values that are not
    tensors (None, or a plain number some optimisers keep) are converted or left out."""
    flat: Tensors = {}
    for index, entries in state.items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                flat[f"{prefix}{index}.{name}"] = value.detach().cpu().clone().contiguous()
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                flat[f"{prefix}{index}.{name}"] = torch.tensor(float(value))
    return flat


def unflatten_state(flat: Tensors, *, prefix: str = "", param_count: int) -> dict[int, dict[str, torch.Tensor]]:
    """The inverse of :func:`flatten_state` for the keys under ``prefix``; raises ValueError
    when a kept index is not a parameter of an optimiser of ``param_count`` parameters (the
    model changed between rounds)."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in flat.items():
        if not key.startswith(prefix):
            continue
        index_text, name = key[len(prefix):].split(".", 1)
        index = int(index_text)
        if not 0 <= index < param_count:
            raise ValueError(f"the kept optimiser state names parameter {index}, but the optimiser has {param_count}: the model changed")
        state.setdefault(index, {})[name] = value
    return state


def _param_count(optimizer: torch.optim.Optimizer) -> int:
    return sum(len(group["params"]) for group in optimizer.param_groups)
