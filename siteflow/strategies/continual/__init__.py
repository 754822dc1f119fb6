"""Continual-learning baselines over the sequential hand-over: ``ewc``, ``si``, ``lwf``,
``owm``. Each is sequential fine-tuning whose sites add one method's loss terms and callbacks
to the task's learner; what a method keeps between sites (Fisher, importances, old weights,
projectors) travels as buffers beside the solver in the hand-over's weights
(:class:`~siteflow.strategies.continual.base.CarryingNetwork`)."""

from siteflow.strategies.continual.base import (
    CarryingNetwork,
    ContinualStrategy,
    TensorTree,
)
from siteflow.strategies.continual.ewc import EWCStrategy
from siteflow.strategies.continual.lwf import LwFStrategy
from siteflow.strategies.continual.owm import OWMStrategy
from siteflow.strategies.continual.si import SIStrategy

__all__ = ["CarryingNetwork", "ContinualStrategy", "EWCStrategy", "LwFStrategy", "OWMStrategy", "SIStrategy", "TensorTree"]
