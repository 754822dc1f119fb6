"""Whether a hand-over file fits the receiving site: same strategy and options, same model,
weights of the names, shapes and dtypes its model has.

Each check compares what the file's manifest (or its weights) says with what the receiving
site is configured with, and refuses a difference with a :class:`HandoverError` that names
the file and every differing value on both sides.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from siteflow.handover.errors import HandoverError
from siteflow.handover.jsontext import as_json
from siteflow.handover.manifest import Manifest

__all__ = ["check_fit", "check_model", "check_strategy"]


def check_strategy(
    path: str | os.PathLike, manifest: Manifest, strategy: str | None, strategy_options: Mapping[str, Any] | None
) -> None:
    """Refuse a file written by another strategy, or by the same one with other options.

    ``strategy_options`` are compared as JSON (tuples and lists are the same), all of them:
    an option set on one side only differs too. A manifest that does not record its options
    (written by an older siteflow) is refused when ``strategy_options`` is given, since
    nothing shows they match.
    """
    if strategy is not None and manifest.strategy != strategy:
        raise HandoverError(path, f"written by strategy {manifest.strategy!r}, this site runs {strategy!r}")
    if strategy_options is None:
        return
    theirs = manifest.strategy_options
    if theirs is None:
        raise HandoverError(
            path,
            "written without its strategy options (by an older siteflow), so they cannot be checked against "
            "this site's; both sites must run the same strategy options: write the file again with this siteflow",
        )
    ours = as_json(strategy_options)
    differences = [
        f"strategy option {name}={_shown(theirs, name)}, this site is configured with {_shown(ours, name)}"
        for name in _differing(theirs, ours)
    ]
    if differences:
        raise HandoverError(
            path, f"written with {'; '.join(differences)}; both sites must run the same strategy options"
        )


def check_model(
    path: str | os.PathLike, manifest: Manifest, model_name: str | None, model_kwargs: Mapping[str, Any] | None
) -> None:
    """Refuse a file written for another architecture: another model, or other kwargs (all of them)."""
    if model_name is not None and manifest.model_name != model_name:
        raise HandoverError(path, f"holds a {manifest.model_name!r} model, this site builds a {model_name!r}")
    if model_kwargs is None:
        return
    ours, theirs = as_json(model_kwargs), manifest.model_kwargs
    differences = [
        f"{name} (file: {json.dumps(theirs.get(name))}, this site: {json.dumps(ours.get(name))})"
        for name in _differing(theirs, ours)
    ]
    if differences:
        raise HandoverError(path, f"a different model architecture: {'; '.join(differences)}")


def check_fit(
    path: str | os.PathLike,
    weights: Mapping[str, torch.Tensor],
    shapes: Mapping[str, Sequence[int]] | None,
    dtypes: Mapping[str, torch.dtype] | None,
) -> None:
    """Refuse weights whose names differ from those that ``shapes`` and ``dtypes`` name, or
    whose shapes or dtypes differ from theirs (None: not checked).

    Up to 5 differences are named, each tensor with both values.
    """
    if shapes is None and dtypes is None:
        return
    expected = {**(shapes or {}), **(dtypes or {})}.keys()
    problems = [f"missing {name!r}" for name in sorted(expected - weights.keys())]
    problems += [f"unexpected {name!r}" for name in sorted(weights.keys() - expected)]
    for name in sorted(expected & weights.keys()):
        tensor = weights[name]
        if shapes is not None and name in shapes:
            theirs, ours = list(tensor.shape), [int(size) for size in shapes[name]]
            if theirs != ours:
                problems.append(f"{name!r} has shape {theirs}, this site's model {ours}")
        if dtypes is not None and name in dtypes and tensor.dtype != dtypes[name]:
            problems.append(f"{name!r} has dtype {_dtype(tensor.dtype)}, this site's model {_dtype(dtypes[name])}")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise HandoverError(path, f"the weights do not fit this site's model: {shown}")


def _differing(theirs: Mapping[str, Any], ours: Mapping[str, Any]) -> list[str]:
    """The keys, sorted, that only one side has or whose values differ."""
    return [
        name
        for name in sorted(ours.keys() | theirs.keys())
        if name not in ours or name not in theirs or ours[name] != theirs[name]
    ]


def _shown(options: Mapping[str, Any], name: str) -> str:
    """The value of option ``name`` as JSON text, or ``unset``."""
    return json.dumps(options[name]) if name in options else "unset"


def _dtype(dtype: torch.dtype) -> str:
    """The name of ``dtype`` without its ``torch.`` prefix (``float32``)."""
    return str(dtype).removeprefix("torch.")
