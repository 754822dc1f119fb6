"""The ``train.inference`` section: how a segmentation model is run over an image when it is
validated and tested (see :class:`~siteflow.config.schema.InferenceConfig`).

:func:`inference_config` checks the section's keys, types and ranges; :func:`window_of_patches`
fills in the sliding window from what the trained site's data looks like (its training patch
size), once the site is known.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from siteflow.config.schema import InferenceConfig
from siteflow.config.validation import ConfigError, check_fields, join


def inference_config(value: Any, key_path: str) -> InferenceConfig:
    """Validate a (merged) ``inference`` mapping: known keys, their types, ``overlap`` in
    [0, 1), ``sw_batch_size`` and every ``roi_size`` entry at least 1, a ``roi_size`` of 2 or
    3 sizes and none with ``mode: whole``."""
    check_fields(value, InferenceConfig, key_path)
    roi_size = value.get("roi_size")
    inference = InferenceConfig(**{**value, "roi_size": None if roi_size is None else tuple(roi_size)})
    if not 0 <= inference.overlap < 1:
        raise ConfigError(join(key_path, "overlap"), f"must be in [0, 1), got {inference.overlap}")
    if inference.sw_batch_size < 1:
        raise ConfigError(join(key_path, "sw_batch_size"), f"must be at least 1, got {inference.sw_batch_size}")
    if inference.roi_size is not None:
        roi_path = join(key_path, "roi_size")
        if len(inference.roi_size) not in (2, 3):
            raise ConfigError(roi_path, f"must give 2 or 3 sizes (one per spatial axis), got {list(inference.roi_size)}")
        if min(inference.roi_size) < 1:
            raise ConfigError(roi_path, f"sizes must be at least 1, got {list(inference.roi_size)}")
        if inference.mode == "whole":
            raise ConfigError(roi_path, "is set, but mode 'whole' runs no window; remove it or choose mode sliding_window")
    return inference


def window_of_patches(inference: InferenceConfig, patch_size: Sequence[int] | None, key_path: str) -> InferenceConfig:
    """``inference`` for a site whose data trains on patches of ``patch_size`` (None: on whole
    images): its ``roi_size`` defaults to the patch size (unless ``mode`` is ``whole``), and a
    given one must have as many axes as the patches. A sliding window needs a ``roi_size``
    (``key_path`` is the section's path, for the errors)."""
    roi_path = join(key_path, "roi_size")
    if inference.roi_size is None and patch_size is not None and inference.mode != "whole":
        inference = dataclasses.replace(inference, roi_size=tuple(int(size) for size in patch_size))
    elif inference.roi_size is not None and patch_size is not None and len(inference.roi_size) != len(patch_size):
        raise ConfigError(
            roi_path, f"has {len(inference.roi_size)} axes, but the data trains on patches of {list(patch_size)}"
        )
    if inference.mode == "sliding_window" and inference.roi_size is None:
        raise ConfigError(
            join(key_path, "mode"),
            "sliding_window needs a window: set roi_size, or train on patches (the dataset's patch_size)",
        )
    return inference
