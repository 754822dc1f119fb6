"""Writing a hand-over file: the weights and their manifest, signed if there is a key, atomically.

The manifest is validated exactly as a reader will validate it before anything is written,
and the file appears complete or not at all (:func:`siteflow.core.atomic.write_bytes`): a
failed write leaves the previous file, if any, untouched. A received finishing time ahead of
this site's clock never makes the write fail: the record behind it is written with its time
(see :func:`siteflow.handover.records.settle_clock_skew`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import torch
from safetensors.torch import save

from siteflow.core.atomic import write_bytes
from siteflow.core.finite import check_finite_weights
from siteflow.core.io import weights_sha256
from siteflow.core.types import SiteRecord
from siteflow.handover.container import METADATA_KEY
from siteflow.handover.jsontext import as_json, canonical_json
from siteflow.handover.manifest import FORMAT_VERSION, Manifest, parse_manifest
from siteflow.handover.records import settle_clock_skew
from siteflow.handover.signing import signature

__all__ = ["write_handover"]


def write_handover(
    path: str | os.PathLike,
    weights: Mapping[str, torch.Tensor],
    *,
    strategy: str,
    model_name: str,
    model_kwargs: Mapping[str, Any],
    sites: Sequence[SiteRecord],
    strategy_options: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    key: bytes | None = None,
) -> Manifest:
    """Write ``weights`` and their manifest to ``path`` atomically; return the manifest.

    ``strategy_options`` are the strategy's options (its config ``kwargs``; None: it has
    none, written as ``{}``), which the receiver checks against its own; ``extra`` is
    strategy state. Both, and ``model_kwargs``, must be JSON (tuples become lists; the
    returned manifest holds them as a reader will see them). With ``key``, the manifest is
    signed. A record of ``sites`` behind its predecessor only by clock skew (the
    predecessor, received from another site, is ahead of this site's clock) is written with
    its predecessor's time; the returned manifest holds the times written.

    Raises:
        TypeError: a value of ``weights`` is not a tensor.
        ValueError: a value JSON cannot hold (NaN, ...).
        NonFiniteWeights: a weight is NaN or infinite (nothing is written).
        HandoverError: a manifest a reader would refuse (e.g. sites whose times go backwards).
    """
    tensors = {}
    for name, tensor in weights.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"weights[{name!r}] is a {type(tensor).__name__}, not a tensor")
        tensors[name] = tensor.detach().cpu().contiguous()
    check_finite_weights(tensors, f"{os.fspath(path)}: not written")
    manifest = {
        "format_version": FORMAT_VERSION,
        "strategy": strategy,
        "strategy_options": as_json(strategy_options or {}),
        "model": {"name": model_name, "kwargs": as_json(model_kwargs)},
        "sites": [dataclasses.asdict(site) for site in settle_clock_skew(sites, datetime.now(timezone.utc))],
        "weights_sha256": weights_sha256(tensors),
        "extra": as_json(extra or {}),
        "signature": None,
    }
    if key is not None:
        manifest["signature"] = signature(manifest, key)
    result = parse_manifest(path, manifest)
    write_bytes(path, save(tensors, metadata={METADATA_KEY: canonical_json(manifest)}))
    return result
