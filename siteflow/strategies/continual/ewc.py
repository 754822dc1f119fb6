"""ewc: sequential hand-over with elastic weight consolidation (Kirkpatrick et al., "Overcoming
catastrophic forgetting in neural networks", PNAS 114(13), 2017); online EWC's running Fisher
as an option (Schwarz et al., "Progress & Compress", ICML 2018)."""

from __future__ import annotations

from typing import Any, Iterable

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
from siteflow.tasks import ExtraLoss, Learner
from siteflow.tasks.base import Batch


def empirical_fisher(learner: Learner, batches: Iterable[Batch], max_samples: int | None = None) -> dict[str, Tensor]:
    """The diagonal empirical Fisher information of ``learner.model`` over ``batches``: the
    mean over samples of the squared gradient of the task's loss of each sample alone,
    ``F_i = 1/N sum_n (d loss(x_n, y_n) / d theta_i) ** 2``, in eval mode (batch norm uses
    its running statistics), float32.

    Args:
        learner: the task's learner (its ``loss_of`` reads a batch's targets).
        batches: collated batches on the learner's device.
        max_samples: stop after this many samples (None: all).

    Returns:
        Trainable parameter name -> a float32 tensor of its shape.
    """
    model = learner.model
    parameters = trainable(model)
    sums = {name: torch.zeros(p.shape, dtype=torch.float32, device=p.device) for name, p in parameters.items()}
    count = 0
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            for batch in batches:
                for index in range(len(batch["image"])):
                    if max_samples is not None and count >= max_samples:
                        break
                    one = {key: value[index : index + 1] for key, value in batch.items()}
                    loss = learner.loss_of(learner(one["image"]), one)
                    grads = torch.autograd.grad(loss, list(parameters.values()), allow_unused=True)
                    for name, grad in zip(parameters, grads):
                        if grad is not None:
                            sums[name] += grad.float().pow(2)
                    count += 1
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("the Fisher information needs at least one training sample")
    return {name: total / count for name, total in sums.items()}


@torch.no_grad()
def consolidate(
    fisher: TensorTree, anchor: TensorTree, new_fisher: dict[str, Tensor], weights: dict[str, Tensor], *, online: bool, gamma: float
) -> None:
    """Fold a site's Fisher ``new_fisher`` at its final ``weights`` into the carried ``fisher``
    and ``anchor``, in place.

    Online: ``F <- gamma * F + F_k``, ``anchor <- theta_k``. Otherwise, one penalty per site,
    ``sum_k lambda/2 F_k (theta - theta_k)^2``, kept in fixed size as the quadratic with the
    same gradient: ``F <- F + F_k`` and ``anchor <- (F_old * anchor + F_k * theta_k) / F``
    (``theta_k`` where ``F_old`` is 0).
    """
    for name, value in new_fisher.items():
        theta = weights[name].detach().float()
        if online:
            fisher[name].mul_(gamma).add_(value)
            anchor[name].copy_(theta)
            continue
        old = fisher[name]
        total = old + value
        mixed = anchor[name] + value / total.clamp_min(torch.finfo(total.dtype).tiny) * (theta - anchor[name])
        anchor[name].copy_(torch.where(old > 0, mixed, theta))
        fisher[name].copy_(total)


class FisherAtSiteEnd(Callback):
    """At the end of a site's training, estimates the Fisher on the site's training data and
    folds it into the carried tensors (see :func:`consolidate`)."""

    def __init__(self, network: CarryingNetwork, *, max_samples: int | None, online: bool, gamma: float) -> None:
        self.network = network
        self.max_samples = max_samples
        self.online = online
        self.gamma = gamma

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        with on_training_device(trainer, pl_module):
            batches = (pl_module.transfer_batch_to_device(batch, pl_module.device, 0) for batch in trainer.train_dataloader)
            new_fisher = empirical_fisher(pl_module, batches, self.max_samples)
            consolidate(
                self.network.tree("fisher"), self.network.tree("anchor"), new_fisher, trainable(pl_module.model),
                online=self.online, gamma=self.gamma,
            )


@STRATEGIES.register("ewc")
class EWCStrategy(ContinualStrategy):
    """Elastic weight consolidation over the sequential hand-over.

    Site ``k`` trains on its loss plus ``ewc_lambda / 2 * sum_i F_i (theta_i - anchor_i)^2``;
    after training, the diagonal empirical Fisher ``F_k`` of its training loss (see
    :func:`empirical_fisher`) at its final weights is folded into the carried Fisher and
    anchor (see :func:`consolidate`). Both travel in the hand-over's weights as
    ``fisher.<parameter>`` and ``anchor.<parameter>`` beside ``solver.<parameter>`` (three
    times the solver's parameters). One device only (the Fisher pass is not distributed).

    Args:
        ewc_lambda: weight of the penalty, non-negative.
        online: online EWC: one running Fisher, decayed by ``gamma`` at every site, and the
            last site's weights as anchor.
        gamma: decay of the running Fisher (online only), in (0, 1].
        fisher_samples: training samples of the Fisher estimate at the end of a site (None:
            the whole training split, one pass).
        **kwargs: the options of sequential (cycles).
    """

    def __init__(
        self, ewc_lambda: float = 10000.0, online: bool = False, gamma: float = 1.0, fisher_samples: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if ewc_lambda < 0:
            raise ValueError(f"ewc_lambda must be non-negative, got {ewc_lambda}")
        if not 0 < gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        if fisher_samples is not None and fisher_samples < 1:
            raise ValueError(f"fisher_samples must be at least 1 (or null: all), got {fisher_samples}")
        self.ewc_lambda = ewc_lambda
        self.online = online
        self.gamma = gamma
        self.fisher_samples = fisher_samples

    def carried_trees(self, solver: nn.Module) -> dict[str, TensorTree]:
        return {"fisher": zeros_like_parameters(solver), "anchor": zeros_like_parameters(solver)}

    def loss_terms(self, network: nn.Module, carried: SiteInput) -> list[ExtraLoss]:
        if not carried.sites or self.ewc_lambda == 0:
            return []
        return [QuadraticPenalty(network.tree("fisher"), network.tree("anchor"), self.ewc_lambda / 2)]

    def callbacks(self, network: nn.Module, carried: SiteInput) -> list[Callback]:
        return [
            CarriedOnDevice(network, "ewc"),
            FisherAtSiteEnd(network, max_samples=self.fisher_samples, online=self.online, gamma=self.gamma),
        ]
