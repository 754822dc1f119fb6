"""What the continual-learning strategies share: the network that carries tensors about the
solver inside the hand-over's weights, a quadratic penalty towards old weights, and the site
learner with a strategy's loss terms and Lightning callbacks.

Everything a method needs at the next site (Fisher information, importances, old weights,
projectors) is a buffer of the travelling network, so the verified hand-over file carries it
unchanged and a deployed site resumes exactly where the simulated relay would be.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from typing import Iterator, Mapping, Sequence

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor, nn

from siteflow.config import SiteRun
from siteflow.strategies.base import SetupRefused, SiteInput, SiteTraining, Trainee
from siteflow.strategies.sequential import SequentialStrategy
from siteflow.tasks import ExtraLoss, Learner, Task


class TensorTree(nn.Module):
    """Buffers stored under dotted names (``encoder.0.weight``) as nested modules, so that
    the state-dict key of a tensor is its name behind the tree's own prefix.

    Args:
        tensors: name -> tensor; no name may be a prefix path of another.
    """

    def __init__(self, tensors: Mapping[str, Tensor]) -> None:
        super().__init__()
        self.names = tuple(tensors)
        for name, tensor in tensors.items():
            *path, leaf = name.split(".")
            node: nn.Module = self
            for part in path:
                if part not in node._modules:
                    node.add_module(part, nn.Module())
                node = node._modules[part]
            node.register_buffer(leaf, tensor)

    def __getitem__(self, name: str) -> Tensor:
        return self.get_buffer(name)

    def items(self) -> list[tuple[str, Tensor]]:
        """(name, tensor) of every tensor, in the order given."""
        return [(name, self[name]) for name in self.names]


class CarryingNetwork(nn.Module):
    """What travels: the ``solver`` and, beside it, the method's tensors about it.

    State-dict keys: ``solver.<name>`` for the solver's weights, ``<tree>.<name>`` for the
    tensors (``fisher.encoder.0.weight``).
    """

    def __init__(self, solver: nn.Module, trees: Mapping[str, TensorTree]) -> None:
        super().__init__()
        self.solver = solver
        self.trees = tuple(trees)
        for name, tree in trees.items():
            self.add_module(name, tree)

    def tree(self, name: str) -> TensorTree:
        """The tensors carried under ``name``."""
        return self.get_submodule(name)


def trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters of ``model`` that train, by name."""
    return {name: parameter for name, parameter in model.named_parameters() if parameter.requires_grad}


def zeros_like_parameters(model: nn.Module) -> TensorTree:
    """A tree of float32 zeros shaped as ``model``'s trainable parameters."""
    return TensorTree({name: torch.zeros(p.shape, dtype=torch.float32) for name, p in trainable(model).items()})


class QuadraticPenalty:
    """``scale * sum_i importance_i * (theta_i - anchor_i) ** 2`` over the learner's trainable
    parameters (EWC: ``scale = lambda / 2``, importance the Fisher; SI: ``scale = c``)."""

    def __init__(self, importance: TensorTree, anchor: TensorTree, scale: float) -> None:
        self.importance = importance
        self.anchor = anchor
        self.scale = scale

    def __call__(self, learner: Learner) -> Tensor:
        terms = [
            (self.importance[name] * (parameter - self.anchor[name]).pow(2)).sum()
            for name, parameter in trainable(learner.model).items()
        ]
        return self.scale * torch.stack(terms).sum()


class CarriedOnDevice(Callback):
    """Moves the carried tensors to the learner's device when a fit starts; refuses
    training over several processes, whose ranks would each update the carried tensors from
    their own shard of the data."""

    def __init__(self, network: CarryingNetwork, strategy: str) -> None:
        self.network = network
        self.strategy = strategy

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.world_size > 1:
            raise SetupRefused(
                f"{self.strategy} updates what it carries from the site's data in one process; DDP over "
                f"{trainer.world_size} processes would give each rank its own: train on one device"
            )

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.network.to(pl_module.device)  # the learner is on its device by now


@contextmanager
def on_training_device(trainer: pl.Trainer, learner: pl.LightningModule) -> Iterator[None]:
    """The learner on the device it trained on, for the ``with`` block: Lightning moves it
    back to the CPU before ``on_fit_end``, where a site's fit folds what it learnt into the
    carried tensors (there, not in ``on_train_end``, which a fit resumed from its last
    epoch's checkpoint skips)."""
    device = learner.device
    learner.to(trainer.strategy.root_device)
    try:
        yield
    finally:
        learner.to(device)


class ContinualStrategy(SequentialStrategy):
    """Sequential hand-over whose sites train the task's learner with a method's extra loss
    terms and callbacks; what the method keeps travels as :class:`TensorTree` buffers of a
    :class:`CarryingNetwork` around the solver.

    Subclasses say what they carry (:meth:`carried_trees`), which terms join the loss
    (:meth:`loss_terms`) and which callbacks update the carried tensors (:meth:`callbacks`).
    """

    def carried_trees(self, solver: nn.Module) -> dict[str, TensorTree]:
        """The tensors that travel with a new ``solver``, by tree name (fixed shapes: the
        hand-over is verified against them)."""
        return {}

    def loss_terms(self, network: nn.Module, carried: SiteInput) -> list[ExtraLoss]:
        """Terms added to the loss of every training step at a site that received ``carried``."""
        return []

    def callbacks(self, network: nn.Module, carried: SiteInput) -> list[Callback]:
        """Lightning callbacks of a site's fit (they update the carried tensors)."""
        return []

    def build_network(self, task: Task) -> nn.Module:
        solver = task.build_model()
        trees = self.carried_trees(solver)
        return CarryingNetwork(solver, trees) if trees else solver

    def solver(self, network: nn.Module) -> nn.Module:
        return network.solver if isinstance(network, CarryingNetwork) else network

    def make_learner(
        self, context: SiteTraining, network: nn.Module, site_runs: Sequence[SiteRun], carried: SiteInput
    ) -> pl.LightningModule:
        train = site_runs[0].train
        task = context.task
        return task.learner(
            self.solver(network), task.build_loss(train, [t.site for t in site_runs]), train,
            extra_losses=self.loss_terms(network, carried),
        )

    def trainee(self, context: SiteTraining, site_runs: Sequence[SiteRun], carried: SiteInput) -> Trainee:
        """The network and learner of a site step, with the strategy's :meth:`callbacks`."""
        trainee = super().trainee(context, site_runs, carried)
        return dataclasses.replace(trainee, callbacks=lambda network: self.callbacks(network, carried))
