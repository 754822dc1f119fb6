"""owm: sequential hand-over with orthogonal weight modification (Zeng, Chen, Cui and Yu,
"Continual learning of context-dependent processing in neural networks", Nature Machine
Intelligence 1, 2019)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback
from torch import Tensor, nn

from siteflow.core.registry import STRATEGIES
from siteflow.strategies.base import SiteInput
from siteflow.strategies.continual.base import (
    CarriedOnDevice,
    CarryingNetwork,
    ContinualStrategy,
    TensorTree,
)

log = logging.getLogger(__name__)

SUPPORTED = "nn.Linear, and nn.Conv2d with groups 1, zero padding given as numbers"


@dataclass(frozen=True)
class ProjectedLayer:
    """A layer whose updates OWM projects: its weight as an (out, fan_in) matrix, the bias
    (if any) as one more input column fed a constant 1."""

    name: str
    module: nn.Linear | nn.Conv2d

    @property
    def key(self) -> str:
        """The name of its projector: its weight's parameter name."""
        return f"{self.name}.weight" if self.name else "weight"

    @property
    def fan_in(self) -> int:
        """Inputs of the (out, fan_in) matrix: in_features or C_in * kh * kw, plus 1 with a bias."""
        return self.module.weight[0].numel() + (self.module.bias is not None)

    def mean_input(self, inputs: Tensor) -> Tensor:
        """The mean of the layer's input vectors (fan_in,) float32 over a batch: Linear
        inputs (..., in); Conv2d inputs (N, C, H, W) unfolded into patches, the mean over
        samples and positions."""
        module = self.module
        if isinstance(module, nn.Conv2d):
            patches = F.unfold(inputs.float(), module.kernel_size, module.dilation, module.padding, module.stride)
            mean = patches.mean(dim=(0, 2))
        else:
            mean = inputs.float().reshape(-1, inputs.shape[-1]).mean(0)
        return torch.cat([mean, mean.new_ones(1)]) if module.bias is not None else mean

    def matrix(self) -> Tensor:
        """The weight (and bias column): (out, fan_in), detached, float32."""
        weight = self.module.weight.detach().float().flatten(1)
        bias = self.module.bias
        return torch.cat([weight, bias.detach().float()[:, None]], 1) if bias is not None else weight

    @torch.no_grad()
    def set_matrix(self, matrix: Tensor) -> None:
        """Write an (out, fan_in) matrix back into the weight (and bias)."""
        weight = self.module.weight
        weight.copy_(matrix[:, : weight[0].numel()].reshape(weight.shape))
        if self.module.bias is not None:
            self.module.bias.copy_(matrix[:, -1])


def supported(module: nn.Module) -> bool:
    """Whether OWM projects ``module``'s updates (see :data:`SUPPORTED`)."""
    if type(module) is nn.Linear:
        return True
    return (
        type(module) is nn.Conv2d and module.groups == 1 and module.padding_mode == "zeros" and not isinstance(module.padding, str)
    )


def projected_layers(model: nn.Module, max_fan_in: int) -> list[ProjectedLayer]:
    """The layers of ``model`` OWM projects, in module order; raises ``ValueError`` when there
    is none (naming ``common.model``) or when one's projector would exceed ``max_fan_in``."""
    layers = [ProjectedLayer(name, module) for name, module in model.named_modules() if supported(module) and module.weight.requires_grad]
    if not layers:
        raise ValueError(f"common.model: owm projects the updates of {SUPPORTED} layers; {type(model).__name__} has none")
    for layer in layers:
        if layer.fan_in > max_fan_in:
            mib = layer.fan_in**2 * 4 / 2**20
            raise ValueError(
                f"common.strategy.kwargs.max_fan_in: layer {layer.name!r} ({type(layer.module).__name__}) has {layer.fan_in} inputs, "
                f"so its projector would be {layer.fan_in}x{layer.fan_in} float32 ({mib:.0f} MiB) in every hand-over; "
                f"max_fan_in is {max_fan_in}"
            )
    return layers


@torch.no_grad()
def update_projector(projector: Tensor, x: Tensor, alpha: float) -> None:
    """OWM's recursive update with one input ``x`` (D,), in place on ``projector`` (D, D):
    ``k = P x / (alpha + x^T P x)``, ``P <- P - k x^T P``. From ``P = I`` after inputs
    ``x_1..x_n`` (rows of X): ``P = alpha (alpha I + X^T X)^-1``, which tends to the projector
    onto the complement of their span as ``alpha -> 0``."""
    px = projector @ x
    projector.sub_(torch.outer(px, px) / (alpha + x @ px))


class OrthogonalProjection(Callback):
    """During a site's training: every step first folds the step's mean inputs of each
    projected layer into its projector, then lets the optimiser step, then replaces the
    layer's update ``Delta`` (out, fan_in) by ``Delta P``. The projectors are the carried
    ones, updated in place (and saved with the site's checkpoints)."""

    def __init__(self, network: CarryingNetwork, layers: list[ProjectedLayer], alpha: float) -> None:
        self.network = network
        self.layers = layers
        self.alpha = alpha
        self._inputs: dict[str, list[Tensor]] = {layer.key: [] for layer in layers}
        self._before: dict[str, Tensor] = {}
        self._hooks: list[Any] = []

    def projector(self, layer: ProjectedLayer) -> Tensor:
        return self.network.tree("projectors")[layer.key]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for layer in self.layers:
            self._hooks.append(layer.module.register_forward_hook(self._keeper(layer)))

    def _keeper(self, layer: ProjectedLayer):
        def keep(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            if module.training and torch.is_grad_enabled():
                self._inputs[layer.key].append(layer.mean_input(inputs[0].detach()))

        return keep

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        for layer in self.layers:
            for x in self._inputs[layer.key]:
                update_projector(self.projector(layer), x, self.alpha)
            self._inputs[layer.key] = []
            self._before[layer.key] = layer.matrix()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        for layer in self.layers:
            before = self._before.pop(layer.key, None)
            if before is not None:
                layer.set_matrix(before + (layer.matrix() - before) @ self.projector(layer))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def state_dict(self) -> dict[str, Any]:
        return {layer.key: self.projector(layer).detach().clone() for layer in self.layers}

    @torch.no_grad()
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """The projectors of the checkpoint, copied into the carried ones (a resumed fit
        whose training is over runs no training hook)."""
        for layer in self.layers:
            self.projector(layer).copy_(state_dict[layer.key])


@STRATEGIES.register("owm")
class OWMStrategy(ContinualStrategy):
    """Orthogonal weight modification over the sequential hand-over.

    Every layer it supports (:data:`SUPPORTED`; for a conv layer, the unfolded C_in * kh * kw
    patches are its inputs) keeps a projector ``P`` (fan_in x fan_in, fan_in counting a bias
    as one more input), the identity before the first site. Every training step, at every
    site, folds the batch's mean input of the layer into ``P`` (:func:`update_projector`)
    and then projects the layer's update: ``Delta W <- Delta W P``, so that it changes the
    layer's output little on the inputs seen before. The optimiser's update is projected,
    not the gradient, so that Adam's per-coordinate scaling cannot undo it (for plain SGD
    the two are the same). Conv inputs are averaged over positions too: one rank-one
    update per layer and batch.

    Other parameters (normalisation layers, transposed convolutions, grouped convolutions)
    train unprojected, and the log names them. Projectors travel in the hand-over's weights
    as ``projectors.<layer>.weight``: ``4 * fan_in^2`` bytes each; a layer with more than
    ``max_fan_in`` inputs is refused. One device only.

    Args:
        alpha: OWM's regulariser of the projector (``P = alpha (alpha I + X^T X)^-1``),
            positive: smaller protects the inputs seen more strictly.
        max_fan_in: the largest fan_in of a projected layer.
        **kwargs: the options of sequential (cycles).
    """

    def __init__(self, alpha: float = 1.0, max_fan_in: int = 4096, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if alpha <= 0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        if max_fan_in < 1:
            raise ValueError(f"max_fan_in must be at least 1, got {max_fan_in}")
        self.alpha = alpha
        self.max_fan_in = max_fan_in

    def carried_trees(self, solver: nn.Module) -> dict[str, TensorTree]:
        layers = projected_layers(solver, self.max_fan_in)
        return {"projectors": TensorTree({layer.key: torch.eye(layer.fan_in) for layer in layers})}

    def callbacks(self, network: nn.Module, carried: SiteInput) -> list[Callback]:
        layers = projected_layers(network.solver, self.max_fan_in)
        projected = {f"{layer.name}.{part}" if layer.name else part for layer in layers for part in ("weight", "bias")}
        free = [name for name, p in network.solver.named_parameters() if p.requires_grad and name not in projected]
        if free:
            log.info("owm: %d parameter tensors train unprojected (not in a supported layer): %s", len(free), ", ".join(free))
        size = sum(layer.fan_in**2 for layer in layers) * 4 / 2**20
        log.info("owm: projecting %d layers (projectors: %.1f MiB)", len(layers), size)
        return [CarriedOnDevice(network, "owm"), OrthogonalProjection(network, layers, self.alpha)]
