"""The ``train.dp_sgd`` section (differentially private training at a site): its keys, types
and ranges (:func:`dp_sgd_config`), and what it needs of the rest of the config
(:func:`check_dp_sgd`): a strategy whose site steps are standard training steps, a model
without batch normalisation, no gradient accumulation nor clipping of its own, 32-bit
training.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from torch import nn

from siteflow.config.schema import DPSGDConfig, TrainConfig
from siteflow.config.validation import ConfigError, check_fields, join
from siteflow.core.extras import MissingExtra, require

FULL_PRECISION = ("32-true", "32")
"""The precisions DP-SGD trains in (Opacus' per-sample gradients are computed in float32)."""


def dp_sgd_config(value: Any, key_path: str) -> DPSGDConfig:
    """Validate a (merged) ``dp_sgd`` mapping: known keys and their types, exactly one of
    ``noise_multiplier`` (> 0) and ``target_epsilon`` (> 0), ``delta`` in (0, 1),
    ``max_grad_norm`` > 0, ``stages`` at least 1."""
    check_fields(value, DPSGDConfig, key_path)
    config = DPSGDConfig(**value)
    if (config.noise_multiplier is None) == (config.target_epsilon is None):
        raise ConfigError(key_path, "give exactly one of noise_multiplier and target_epsilon")
    for key in ("noise_multiplier", "target_epsilon", "max_grad_norm"):
        number = getattr(config, key)
        if number is not None and not number > 0:
            raise ConfigError(join(key_path, key), f"must be greater than 0, got {number}")
    if not 0 < config.delta < 1:
        raise ConfigError(join(key_path, "delta"), f"must be in (0, 1), got {config.delta}")
    if config.stages is not None and config.stages < 1:
        raise ConfigError(join(key_path, "stages"), f"must be at least 1, got {config.stages}")
    return config


def with_stages(train: TrainConfig, strategy: Any) -> TrainConfig:
    """``train`` with its ``dp_sgd.stages`` filled in from ``strategy`` when not given."""
    if train.dp_sgd is None or train.dp_sgd.stages is not None:
        return train
    return dataclasses.replace(train, dp_sgd=dataclasses.replace(train.dp_sgd, stages=strategy.site_visits()))


def check_dp_sgd(strategy: Any, network: nn.Module, trains: Sequence[tuple[str, TrainConfig]]) -> None:
    """Each ``(key path, train)`` with ``dp_sgd`` must suit it: a strategy that supports it
    (it declares ``supports_dp_sgd``), a network (``strategy``'s, on
    any device) without batch normalisation, which mixes the samples of a batch, and no
    ``accumulate_grad_batches``, ``gradient_clip_val`` nor reduced ``precision``."""
    for key_path, train in trains:
        if train.dp_sgd is None:
            continue
        dp_path = join(key_path, "dp_sgd")
        if not strategy.supports_dp_sgd:
            raise ConfigError(
                dp_path, f"strategy {type(strategy).__name__} does not support DP-SGD (its site steps are not "
                "standard training steps); remove dp_sgd or choose local, sequential or a federated strategy",
            )
        try:
            require("opacus", "privacy", "DP-SGD")
        except MissingExtra as error:
            raise ConfigError(dp_path, str(error)) from None
        batch_norms = sorted({type(m).__name__ for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)})
        if batch_norms:
            raise ConfigError(
                dp_path, f"the model has batch normalisation ({', '.join(batch_norms)}), which mixes the samples of a "
                "batch, so one sample's contribution cannot be bounded: set common.model.kwargs.norm to group or "
                "instance (GroupNorm or InstanceNorm), or remove dp_sgd",
            )
        if train.accumulate_grad_batches != 1:
            raise ConfigError(join(key_path, "accumulate_grad_batches"), "must be 1 with dp_sgd (one noisy step per Poisson batch)")
        if train.gradient_clip_val is not None:
            raise ConfigError(
                join(key_path, "gradient_clip_val"), "must be null with dp_sgd, which clips every sample's gradient "
                "(dp_sgd.max_grad_norm)",
            )
        if train.precision not in FULL_PRECISION:
            raise ConfigError(join(key_path, "precision"), f"must be 32-true with dp_sgd, got {train.precision!r}")
