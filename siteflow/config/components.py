"""Validation by building: the parts of an experiment are built once, cheaply, while the
config is validated, so that their own checks speak before any training.

The strategy is built from its options; every site's data describes itself
(``DATASETS.get(name).describe(**kwargs)``, a ``DataSpec``: no file is read); the task that
the data declares is built over the whole config (it checks that one model serves every
site), then the strategy's network, which holds the model (on PyTorch's ``meta`` device:
shapes without memory), and the loss of every ``train``. What a constructor refuses becomes a
:class:`ConfigError` at the key path of the options it was given. The config layer reaches
these classes through the registries only.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from siteflow.config.privacy import check_dp_sgd
from siteflow.config.schema import Component, ExperimentConfig, TrainConfig
from siteflow.config.validation import ConfigError, join
from siteflow.core.errors import OptionError
from siteflow.core.registry import DATASETS, LOSSES, MODELS, STRATEGIES, TASKS, UnknownNameError

CONVOLUTIONS = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
"""The layers whose weight (out, in, *kernel) tells a model's spatial axes."""

PER_CLASS_OPTIONS = ("class_weights", "pos_weight")
"""Options of the losses that hold one weight per class."""

BUILD_ERRORS = (ValueError, TypeError, RuntimeError, ArithmeticError)
"""What a constructor raises for options it refuses (RuntimeError: a tensor of a negative
size; ArithmeticError: a division by zero or an overflow)."""


@contextmanager
def refused(key_path: str) -> Iterator[None]:
    """Turn a constructor's refusal (:data:`BUILD_ERRORS`) into a ConfigError at ``key_path``
    (an :class:`OptionError` at its option's key path under ``key_path``); a ConfigError passes as it is."""
    try:
        yield
    except ConfigError:
        raise  # located already
    except OptionError as error:
        raise ConfigError(join(key_path, error.option), error.problem) from None
    except BUILD_ERRORS as error:
        raise ConfigError(key_path, _message(error)) from None


def _message(error: Exception) -> str:
    """What an exception says (its type's name when it says nothing)."""
    return str(error) or type(error).__name__


def build_strategy(strategy: Component) -> Any:
    """The configured strategy object, built from its options."""
    with refused("common.strategy.kwargs"):
        return STRATEGIES.get(strategy.name)(**strategy.kwargs)


def check_strategy_fits(strategy: Any, config: ExperimentConfig) -> None:
    """What the strategy checks about the rest of the config (its ``check_fits``), its
    refusals reported at its options' keys."""
    with refused("common.strategy.kwargs"):
        strategy.check_fits(config)


def data_spec(dataset: Component, key_path: str) -> Any:
    """What the data of a (merged, validated) dataset entry looks like: its ``DataSpec``."""
    with refused(join(key_path, "kwargs")):
        return DATASETS.get(dataset.name).describe(**dataset.kwargs)


def check_one_model_fits(sites: Sequence[tuple[str, str, Any]]) -> None:
    """``(key path, site name, DataSpec)`` of every site: each must hold data of the first
    site's task, with its number of input channels and spatial axes (the task checks the
    classes)."""
    _, first_name, first = sites[0]
    for key_path, name, spec in sites[1:]:
        if (spec.task, spec.in_channels, spec.spatial_dims) != (first.task, first.in_channels, first.spatial_dims):
            dims = spec.spatial_dims != first.spatial_dims
            raise ConfigError(
                key_path,
                f"site {name!r} holds {_kind(spec, dims)}, site {first_name!r} holds {_kind(first, dims)}: "
                "one model cannot serve both",
            )


def check_override(name: str, trained: Any, tested: Any, key_path: str) -> None:
    """A site's ``task_confs`` dataset (``trained``, a DataSpec) may change how its data is
    read, not what the data is: the site is tested as its ``all_tasks_datasets`` entry
    (``tested``) says."""
    what = ("task", "class_names", "in_channels", "spatial_dims")
    if [getattr(trained, key) for key in what] != [getattr(tested, key) for key in what]:
        dims = trained.spatial_dims != tested.spatial_dims
        raise ConfigError(
            key_path,
            f"site {name!r} would train on {_kind(trained, dims)} but is tested on {_kind(tested, dims)}; "
            "change its all_tasks_datasets entry instead",
        )


def _kind(spec: Any, dims: bool = False) -> str:
    """A DataSpec in words: task, classes and input channels, and its spatial axes if ``dims``."""
    kind = f"{spec.task} data of classes {list(spec.class_names)} with {spec.in_channels} input channels"
    return f"{kind} in {spec.spatial_dims}D" if dims else kind


def check_buildable(config: ExperimentConfig, strategy: Any, trains: Sequence[tuple[str, TrainConfig]]) -> None:
    """Build the task over ``config``, ``strategy``'s network (the model, for most
    strategies) and the loss of every ``(key path, train)``."""
    task = _task(config)
    check_dp_sgd(strategy, _check_network(strategy, task), trains)
    _check_model_dims(task, config)
    for key_path, train in trains:
        _check_loss_fits(task, train.loss.name, join(join(key_path, "loss"), "name"))
        with refused(join(key_path, "loss")):
            loss = task.build_loss(train)
        _check_loss_weights(loss, task.class_names, join(join(key_path, "loss"), "kwargs"))


def _check_loss_fits(task: Any, name: str, key_path: str) -> None:
    """The loss ``name`` must compare the logits with what ``task``'s data holds: its declared
    ``targets`` among the task's ``loss_targets``. A loss that declares no ``targets``, or a
    task that declares no ``loss_targets`` (a plug-in may do neither), is not checked."""
    targets = getattr(LOSSES.get(name), "targets", None)
    if targets is None or not task.loss_targets or targets in task.loss_targets:
        return
    fitting = sorted(other for other in LOSSES.names() if getattr(LOSSES.get(other), "targets", None) in task.loss_targets)
    raise ConfigError(
        key_path,
        f"loss {name!r} compares the logits with {targets.replace('_', ' ')}; this study's {type(task).__name__} "
        f"needs {' or '.join(t.replace('_', ' ') for t in task.loss_targets)}: choose one of {fitting}",
    )


def _check_loss_weights(loss: torch.nn.Module, class_names: Sequence[str], key_path: str) -> None:
    """A loss's per-class weights (``class_weights``, ``pos_weight``, in the loss or any loss
    it combines) must have one value per class of the data."""
    for module in loss.modules():
        for option in PER_CLASS_OPTIONS:
            weights = getattr(module, option, None)
            if isinstance(weights, torch.Tensor) and weights.numel() != len(class_names):
                raise ConfigError(
                    join(key_path, option),
                    f"has {weights.numel()} values, but the data has {len(class_names)} classes {list(class_names)}",
                )


def _check_network(strategy: Any, task: Any) -> torch.nn.Module:
    """Build ``strategy``'s network on the ``meta`` device (shapes without memory) and return
    it. When it
    fails, the model alone is built: if that fails too, the model's options are at fault;
    else the strategy's (at the option an :class:`OptionError` names)."""
    with torch.device("meta"):
        try:
            return strategy.build_network(task)
        except BUILD_ERRORS as error:
            with refused("common.model.kwargs"):
                task.build_model()
            if isinstance(error, OptionError):
                raise ConfigError(join("common.strategy.kwargs", error.option), error.problem) from None
            raise ConfigError("common.strategy", _message(error)) from None


def _check_model_dims(task: Any, config: ExperimentConfig) -> None:
    """The model (built on the ``meta`` device) must convolve over as many spatial axes as the
    data has (``DataSpec.spatial_dims``): a 2D model on volumes, or a 3D one on images, is
    refused at ``common.model.kwargs.spatial_dims`` when the model has that option, else at
    ``common.model.name``. A model without convolutions is not checked."""
    with torch.device("meta"):
        model = task.build_model()
    model_dims = next((m.weight.ndim - 2 for m in model.modules() if isinstance(m, CONVOLUTIONS)), None)
    first = config.sites[0]
    data_dims = task.specs[first.task_name].spatial_dims
    if model_dims is None or model_dims == data_dims:
        return
    data = "3D volumes (C, D, H, W)" if data_dims == 3 else f"{data_dims}D images"
    takes_dims = "spatial_dims" in inspect.signature(MODELS.get(config.model.name)).parameters
    key_path = "common.model.kwargs.spatial_dims" if takes_dims else "common.model.name"
    remedy = f"set spatial_dims: {data_dims}" if takes_dims else f"choose a {data_dims}D model"
    raise ConfigError(
        key_path,
        f"model {config.model.name!r} is {model_dims}D (its convolutions run over {model_dims} spatial axes), "
        f"but site {first.task_name!r} holds {data} ({first.dataset.name}): {remedy}",
    )


def _task(config: ExperimentConfig) -> Any:
    """The task that the model declares (its class attribute ``task``: a masked autoencoder
    pre-trains on any images), else the first site's data, built over every site."""
    first = config.sites[0]
    kind = getattr(MODELS.get(config.model.name), "task", None) or data_spec(first.dataset, "all_tasks_datasets[0]").task
    try:
        task_class = TASKS.get(kind)
    except UnknownNameError as error:
        raise ConfigError("all_tasks_datasets[0].name", f"{first.dataset.name} data is for an {error.message}") from None
    with refused("all_tasks_datasets"):
        return task_class(config)
