"""Reading a hand-over file: verify everything before anything is returned.

Both readers open only a regular file (:func:`siteflow.core.io.open_regular`) and
read its header only once its length is known to be sane
(:func:`siteflow.core.io.read_header`). :func:`read_handover` then reads the
whole file and checks, in order: the manifest's form, the signature, that no finishing time
is ahead of this site's clock by more than the tolerated clock skew, the strategy and its
options, the model, the relay order, the weights against the manifest's digest, their
names, shapes and dtypes, and that they are finite; the first check that fails is raised as
a :class:`HandoverError` naming the file. :func:`read_manifest` reads only the header, for a
quick look.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import torch

from siteflow.core.io import check_finite, open_regular, parse_weights, read_header, weights_sha256
from siteflow.core.plausibility import implausible
from siteflow.handover.compatibility import check_fit, check_model, check_strategy
from siteflow.handover.container import KIND, manifest_from_header
from siteflow.handover.errors import HandoverError
from siteflow.handover.manifest import Manifest
from siteflow.handover.records import check_chain_sites, check_not_ahead, check_relay_order
from siteflow.handover.signing import check_signature

__all__ = ["read_handover", "read_manifest"]


def read_manifest(path: str | os.PathLike, *, key: bytes | None = None) -> Manifest:
    """The manifest of the hand-over file ``path``, reading only its header.

    Checks the manifest's form, its finishing times against this site's clock and, with
    ``key``, its signature (see :mod:`siteflow.handover.signing` for the policy); the
    weights are not read, so their digest is not checked.
    """
    with open_regular(path, "file", refusal=HandoverError) as (handle, size):
        header = read_header(path, handle, size, what=KIND, refusal=HandoverError)
    manifest = manifest_from_header(path, header)
    check_signature(path, manifest, key)
    check_not_ahead(path, manifest.sites, datetime.now(timezone.utc))
    return manifest


def read_handover(
    path: str | os.PathLike,
    *,
    key: bytes | None = None,
    strategy: str | None = None,
    strategy_options: Mapping[str, Any] | None = None,
    model_name: str | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    expected_shapes: Mapping[str, Sequence[int]] | None = None,
    expected_dtypes: Mapping[str, torch.dtype] | None = None,
    receiving_task_id: int | None = None,
    site_order: Sequence[int] | None = None,
    site_names: Mapping[int, str] | None = None,
    reference: Mapping[str, torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], Manifest]:
    """Read and verify the hand-over file ``path``; return its weights and manifest.

    Always checked: the file is a regular file and a safetensors file with a well-formed
    manifest of a known format version, no finishing time is more than a day ahead of this
    site's clock (:data:`siteflow.handover.records.CLOCK_SKEW`), the weights match the
    manifest's digest, and they are finite (no NaN, no infinity). With ``key``: the
    signature (see :mod:`siteflow.handover.signing` for the policy). Each other argument
    given is compared with the file: ``strategy``, ``strategy_options`` (all of them, as
    JSON; a file that does not record its options, written by an older siteflow, is
    refused), ``model_name``, ``model_kwargs`` (all of them, so a different ``num_classes``
    is refused), ``expected_shapes`` and ``expected_dtypes`` (name -> shape, name -> dtype
    of every tensor this site expects, e.g. ``{k: v.shape for k, v in state.items()}`` and
    ``{k: v.dtype for k, v in state.items()}`` of ``state = model.state_dict()``: the same
    names, the same shapes, the same dtypes).

    ``site_order`` is the consortium's planned sequence of task ids, each cycle listed
    (``[1, 2, 3] * cycles``): the file's chain must be the start of it, and
    ``receiving_task_id`` (which needs ``site_order``) the next entry. ``site_names`` (task
    id -> site name, the config's sites): every site of the chain must be one of them, by id
    and name. ``reference`` (the receiver's freshly initialised weights): the weights must be
    plausible against it (:func:`~siteflow.core.plausibility.implausible`: no negative
    variance or counter, no magnitude far beyond the initialisation's).

    Raises:
        HandoverError: naming the file and the first check that failed.
    """
    if receiving_task_id is not None and site_order is None:
        raise TypeError("read_handover: receiving_task_id needs the site_order it is checked against")
    with open_regular(path, "file", refusal=HandoverError) as (handle, size):
        header = read_header(path, handle, size, what=KIND, refusal=HandoverError)
        handle.seek(0)
        data = handle.read(size)
    manifest = manifest_from_header(path, header)
    check_signature(path, manifest, key)
    check_not_ahead(path, manifest.sites, datetime.now(timezone.utc))
    check_strategy(path, manifest, strategy, strategy_options)
    check_model(path, manifest, model_name, model_kwargs)
    if site_names is not None:
        check_chain_sites(path, manifest.sites, site_names)
    if site_order is not None:
        check_relay_order(path, manifest.sites, list(site_order), receiving_task_id)
    weights = parse_weights(path, data, refusal=HandoverError)
    if not hmac.compare_digest(weights_sha256(weights), manifest.weights_sha256):
        raise HandoverError(path, "the weights do not match the manifest's SHA-256 digest (corrupted or altered)")
    check_fit(path, weights, expected_shapes, expected_dtypes)
    check_finite(path, weights, refusal=HandoverError)
    if reference is not None and (reason := implausible(weights, reference)):
        raise HandoverError(path, f"the weights cannot come from training: {reason}")
    return weights, manifest
