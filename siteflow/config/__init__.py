"""Experiment configs: YAML -> validated, merged per-site configs (see :mod:`.loading`)."""

from siteflow.config.loading import deep_merge, load_config, parse_config
from siteflow.config.paths import PACKAGED_CONFIGS, resolve_config_path
from siteflow.config.schema import (
    CheckpointConfig,
    Component,
    ExperimentConfig,
    InferenceConfig,
    SiteConfig,
    SiteRun,
    TrainConfig,
)
from siteflow.config.validation import ConfigError

__all__ = [
    "PACKAGED_CONFIGS",
    "CheckpointConfig",
    "Component",
    "ConfigError",
    "ExperimentConfig",
    "InferenceConfig",
    "SiteConfig",
    "SiteRun",
    "TrainConfig",
    "deep_merge",
    "load_config",
    "parse_config",
    "resolve_config_path",
]
