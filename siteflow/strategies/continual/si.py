"""si: sequential hand-over with synaptic intelligence (Zenke, Poole and Ganguli, "Continual
Learning Through Synaptic Intelligence", ICML 2017)."""

from __future__ import annotations

from typing import Any, Mapping

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor, nn

from siteflow.core.registry import STRATEGIES
from siteflow.strategies.base import SiteInput
from siteflow.strategies.continual.base import (
    CarriedOnDevice,
    CarryingNetwork,
    ContinualStrategy,
    QuadraticPenalty,
    TensorTree,
    on_training_device,
    trainable,
    zeros_like_parameters,
)
from siteflow.tasks import ExtraLoss


class PathIntegral:
    """SI's running sum ``omega_i = -sum_t g_i(t) * (theta_i(t+1) - theta_i(t))`` over the
    optimiser steps of one site, ``g(t)`` being the gradient the step used (of the whole
    training loss, penalty included).

    Call :meth:`before_step` when the gradients are in place and :meth:`after_step` once the
    optimiser has moved the parameters.

    Args:
        parameters: the trainable parameters, by name.
    """

    def __init__(self, parameters: Mapping[str, nn.Parameter]) -> None:
        self.parameters = dict(parameters)
        self.start = {name: p.detach().float().clone() for name, p in self.parameters.items()}
        self.omega = {name: torch.zeros_like(value) for name, value in self.start.items()}
        self._pending: dict[str, tuple[Tensor, Tensor]] = {}

    @torch.no_grad()
    def before_step(self) -> None:
        """Keep each parameter's gradient and value before the step."""
        self._pending = {
            name: (p.grad.detach().float().clone(), p.detach().float().clone())
            for name, p in self.parameters.items()
            if p.grad is not None
        }

    @torch.no_grad()
    def after_step(self) -> None:
        """Add the step's ``-g * delta`` to ``omega`` (nothing if no step was prepared)."""
        for name, (grad, before) in self._pending.items():
            self.omega[name] -= grad * (self.parameters[name].detach().float() - before)
        self._pending = {}

    @torch.no_grad()
    def importance(self, xi: float) -> dict[str, Tensor]:
        """This site's ``omega_i / ((theta_i(end) - theta_i(start)) ** 2 + xi)``, clamped at 0
        (a negative path integral, the loss rising along the path, would reward moving away)."""
        return {
            name: (self.omega[name] / ((p.detach().float() - self.start[name]).pow(2) + xi)).clamp_min(0)
            for name, p in self.parameters.items()
        }

    def state_dict(self) -> dict[str, Any]:
        return {"start": self.start, "omega": self.omega}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Take back :meth:`state_dict`'s tensors, on the parameters' devices."""
        self.start = {name: tensor.to(self.parameters[name].device, copy=True) for name, tensor in state["start"].items()}
        self.omega = {name: tensor.to(self.parameters[name].device, copy=True) for name, tensor in state["omega"].items()}


class SynapticIntelligence(Callback):
    """Accumulates the path integral during a site's training (saved with its checkpoints),
    then adds the site's importance to the carried ``importance`` and sets the carried
    ``anchor`` to the final weights."""

    def __init__(self, network: CarryingNetwork, xi: float) -> None:
        self.network = network
        self.xi = xi
        self.path: PathIntegral | None = None
        self._restored: Mapping[str, Any] | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.path = PathIntegral(trainable(pl_module.model))
        if self._restored is not None:
            self.path.load_state_dict(self._restored)

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        self.path.before_step()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.path.after_step()

    @torch.no_grad()
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        importance, anchor = self.network.tree("importance"), self.network.tree("anchor")
        with on_training_device(trainer, pl_module):
            for name, value in self.path.importance(self.xi).items():
                importance[name].add_(value)
                anchor[name].copy_(self.path.parameters[name].detach().float())

    def state_dict(self) -> dict[str, Any]:
        return self.path.state_dict() if self.path is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Called before or after ``on_fit_start``, depending on Lightning's strategy."""
        if not state_dict:
            return
        if self.path is not None:
            self.path.load_state_dict(state_dict)
        else:
            self._restored = state_dict


@STRATEGIES.register("si")
class SIStrategy(ContinualStrategy):
    """Synaptic intelligence over the sequential hand-over.

    During site ``k``'s training every parameter's contribution to the drop of the loss is
    summed along the optimiser's path (:class:`PathIntegral`); at its end the site's
    importance ``omega / (delta^2 + xi)`` is added to the carried importance ``Omega`` and the
    final weights become the carried anchor. Site ``k`` trains on its loss plus
    ``c * sum_i Omega_i (theta_i - anchor_i)^2``. ``importance.<parameter>`` and
    ``anchor.<parameter>`` travel in the hand-over's weights beside ``solver.<parameter>``
    (three times the solver's parameters).

    Args:
        c: weight of the penalty, non-negative.
        xi: damping of the importance's denominator, positive.
        **kwargs: the options of sequential (cycles).
    """

    def __init__(self, c: float = 10.0, xi: float = 0.001, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if c < 0:
            raise ValueError(f"c must be non-negative, got {c}")
        if xi <= 0:
            raise ValueError(f"xi must be positive, got {xi}")
        self.c = c
        self.xi = xi

    def carried_trees(self, solver: nn.Module) -> dict[str, TensorTree]:
        return {"importance": zeros_like_parameters(solver), "anchor": zeros_like_parameters(solver)}

    def loss_terms(self, network: nn.Module, carried: SiteInput) -> list[ExtraLoss]:
        if not carried.sites or self.c == 0:
            return []
        return [QuadraticPenalty(network.tree("importance"), network.tree("anchor"), self.c)]

    def callbacks(self, network: nn.Module, carried: SiteInput) -> list[Callback]:
        return [CarriedOnDevice(network, "si"), SynapticIntelligence(network, self.xi)]
