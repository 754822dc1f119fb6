"""lwf: sequential hand-over with learning without forgetting (Li and Hoiem, "Learning without
Forgetting", ECCV 2016 / TPAMI 2018): the received model, frozen, is the teacher of the site's
own images."""

from __future__ import annotations

import copy
from typing import Any, Sequence

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from siteflow.config import SiteRun
from siteflow.core.registry import STRATEGIES
from siteflow.losses import distillation_loss
from siteflow.strategies.base import SetupRefused, SiteInput, SiteTraining
from siteflow.strategies.continual.base import ContinualStrategy
from siteflow.tasks import ExtraLoss, Learner


class DistillationTerm:
    """``weight * distillation_loss(teacher(x), student(x), temperature)`` on the images
    ``x`` (N, C, *spatial) of the training step: the student's forward pass of the step is
    read back through a forward hook on it (no second pass); the teacher is a frozen copy.

    Args:
        student: the model that trains; hooked here.
        teacher: the received model; frozen here (eval mode, no gradients; not a submodule of
            the learner, so Lightning never sets it back to train mode).
        weight, temperature: of the term.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, *, weight: float, temperature: float) -> None:
        self.teacher = teacher.eval().requires_grad_(False)
        self.weight = weight
        self.temperature = temperature
        self._seen: tuple[Tensor, Tensor] | None = None
        student.register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        if module.training and torch.is_grad_enabled():
            self._seen = (inputs[0], output)

    def __call__(self, learner: Learner) -> Tensor:
        if self._seen is None:
            raise RuntimeError("LwF's term was asked for before the training step's forward pass")
        images, student = self._seen
        self._seen = None
        with torch.no_grad():
            teacher = self.teacher.to(images.device)(images)
        return self.weight * distillation_loss(teacher, student, self.temperature)


@STRATEGIES.register("lwf")
class LwFStrategy(ContinualStrategy):
    """Learning without forgetting over the sequential hand-over.

    Every site after the first trains on its loss plus ``weight * distillation_loss(old(x),
    new(x), temperature)`` (:func:`siteflow.losses.distillation_loss`: temperature-softened
    cross-entropy over the classes, dim 1, scaled by ``temperature^2``) on its own training
    images ``x``, ``old`` being the received model frozen with its batch-norm statistics.
    Nothing travels but the solver: the hand-over is sequential's. Tasks whose outputs are
    class distributions over dim 1 only (``Task.class_distributions``: segmentation, one class
    per image).

    Args:
        temperature: softening temperature, positive.
        weight: weight of the distillation term, non-negative.
        **kwargs: the options of sequential (cycles).
    """

    def __init__(self, temperature: float = 2.0, weight: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if weight < 0:
            raise ValueError(f"weight must be non-negative, got {weight}")
        self.temperature = temperature
        self.weight = weight

    def make_learner(
        self, context: SiteTraining, network: nn.Module, site_runs: Sequence[SiteRun], carried: SiteInput
    ) -> pl.LightningModule:
        if not context.task.class_distributions:
            raise SetupRefused(f"lwf distils class distributions (softmax logits); this study's task is {type(context.task).__name__}")
        return super().make_learner(context, network, site_runs, carried)

    def loss_terms(self, network: nn.Module, carried: SiteInput) -> list[ExtraLoss]:
        """The distillation towards a frozen copy of ``network`` as received (none at the
        first site, which received nothing trained)."""
        if not carried.sites or self.weight == 0:
            return []
        return [DistillationTerm(network, copy.deepcopy(network), weight=self.weight, temperature=self.temperature)]
