"""Optimizer and scheduler entries of a ``train`` mapping: torch classes by name.

Beyond the names and the types of their options, torch checks some option values when it
builds an optimizer or a scheduler, and others only when training runs into them (a
``T_max: 0`` divides by zero at the first epoch's end; a negative ``gamma`` turns the
learning rate negative). :func:`check_optimization` therefore refuses values out of range
by their names (:data:`RANGES`: a learning rate of 0 is accepted by torch but trains
nothing), then builds the optimizer on a probe parameter, takes one step, builds the
scheduler and steps it through the epochs of a site: whatever torch refuses on the way
becomes a :class:`ConfigError` at the entry's key path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.optim import lr_scheduler

from siteflow.config.schema import Component, TrainConfig
from siteflow.config.keys import COMPONENT, names
from siteflow.config.validation import ConfigError, check_keys, check_kwargs, check_type, join, short_repr
from siteflow.core.errors import nearest

RESERVED = ("params", "optimizer")
"""Constructor parameters that siteflow passes itself: the model's parameters, the optimizer."""

MAX_PROBE_EPOCHS = 1000
"""The scheduler is stepped through at most this many epochs of a site."""

Range = tuple[Callable[[float], bool], str]

RANGES: dict[str, Range] = {
    "lr": (lambda v: v > 0, "greater than 0"),
    "max_lr": (lambda v: v > 0, "greater than 0"),
    "gamma": (lambda v: v > 0, "greater than 0"),
    "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "betas": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "weight_decay": (lambda v: v >= 0, "at least 0"),
    "eps": (lambda v: v >= 0, "at least 0"),
    "T_max": (lambda v: v >= 1, "at least 1"),
    "step_size": (lambda v: v >= 1, "at least 1"),
}
"""Option name -> (whether a value is in range, the range in words), for the options of every
optimizer and scheduler that have them; a list (``betas``) is checked value by value."""


def optimizer_component(value: Any, key_path: str) -> Component:
    """Validate ``{name, kwargs}`` naming a :mod:`torch.optim` optimizer."""
    return _torch_component(value, key_path, torch.optim, torch.optim.Optimizer)


def scheduler_component(value: Any, key_path: str) -> Component:
    """Validate ``{name, kwargs}`` naming a :mod:`torch.optim.lr_scheduler` scheduler."""
    return _torch_component(value, key_path, lr_scheduler, lr_scheduler.LRScheduler)


def _torch_component(value: Any, key_path: str, module: Any, base: type) -> Component:
    """Validate ``{name, kwargs}`` naming a public subclass of ``base`` in ``module``."""
    check_type(value, dict, key_path)
    check_keys(value, names(COMPONENT), key_path)
    name = value.get("name")
    check_type(name, str, join(key_path, "name"))
    known = _subclasses(module, base)
    if name not in known:
        raise ConfigError(join(key_path, "name"), f"unknown {module.__name__} class {name!r}{nearest(name, known)}")
    kwargs = value.get("kwargs") or {}
    check_kwargs(getattr(module, name), kwargs, join(key_path, "kwargs"), reserved=RESERVED)
    return Component(name, dict(kwargs))


def _subclasses(module: Any, base: type) -> list[str]:
    """The names of the public classes of ``module`` that subclass ``base`` (not ``base``)."""
    return [n for n, c in vars(module).items() if not n.startswith("_") and isinstance(c, type) and issubclass(c, base) and c is not base]


def check_optimization(train: TrainConfig, key_path: str) -> None:
    """Check the optimizer and scheduler of the ``train`` at ``key_path`` (see the module
    docstring)."""
    optimizer_path = join(key_path, "optimizer")
    scheduler_path = join(key_path, "scheduler")
    _check_ranges(train.optimizer.kwargs, join(optimizer_path, "kwargs"))
    if train.scheduler is not None:
        _check_ranges(train.scheduler.kwargs, join(scheduler_path, "kwargs"))
    with _refused(optimizer_path):
        probe = _Probe(train.optimizer)
    scheduler = None
    if train.scheduler is not None:
        with _refused(scheduler_path):
            scheduler = getattr(lr_scheduler, train.scheduler.name)(probe.optimizer, **train.scheduler.kwargs)
    with _refused(optimizer_path):
        probe.step()
    if scheduler is not None:
        _step_through(scheduler, min(train.epochs, MAX_PROBE_EPOCHS), scheduler_path)


def _check_ranges(kwargs: dict, key_path: str) -> None:
    """Refuse the numbers of ``kwargs`` outside their :data:`RANGES`."""
    for key, value in kwargs.items():
        if key not in RANGES:
            continue
        values = enumerate(value) if isinstance(value, (list, tuple)) else [(None, value)]
        for index, number in values:
            within, words = RANGES[key]
            if _is_number(number) and not within(number):
                where = join(key_path, key) if index is None else join(join(key_path, key), index)
                raise ConfigError(where, f"must be {words}, got {short_repr(number)}")


def _is_number(value: Any) -> bool:
    """Whether ``value`` is an int or a float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@contextmanager
def _refused(key_path: str) -> Iterator[None]:
    """Turn whatever torch raises while it builds or steps a probe into a ConfigError: the
    probe itself is valid, so the options are what it refuses."""
    try:
        yield
    except Exception as error:  # noqa: BLE001 -- torch raises ValueError, TypeError, KeyError, ZeroDivisionError...
        raise ConfigError(key_path, f"torch refuses these settings: {type(error).__name__}: {error}") from None


class _Probe:
    """A weight matrix and a bias (as every model has), trained by the configured optimizer."""

    def __init__(self, optimizer: Component) -> None:
        self.parameters = [torch.nn.Parameter(torch.ones(2, 2)), torch.nn.Parameter(torch.ones(2))]
        self.optimizer: torch.optim.Optimizer = getattr(torch.optim, optimizer.name)(self.parameters, **optimizer.kwargs)

    def loss(self) -> torch.Tensor:
        """The closure of a step: a loss of the parameters, with its gradients."""
        self.optimizer.zero_grad()
        loss = sum((p**2).sum() for p in self.parameters)
        loss.backward()
        return loss

    def step(self) -> None:
        """One optimizer step, as Lightning takes it (with a closure)."""
        self.optimizer.step(self.loss)


def _step_through(scheduler: lr_scheduler.LRScheduler, epochs: int, key_path: str) -> None:
    """Step ``scheduler`` ``epochs`` times (once per epoch, as siteflow does); the learning
    rate must stay finite and non-negative."""
    with _refused(key_path):
        for _ in range(epochs):
            scheduler.step()
    for group in scheduler.optimizer.param_groups:
        rate = float(group["lr"])
        if not math.isfinite(rate) or rate < 0:
            raise ConfigError(key_path, f"makes the learning rate {rate} within {epochs} epochs")
