"""The hand-over file: a model carried from site to site as one file, verified on arrival.

In a deployed relay the weights travel between hospitals on a disk, so the receiving site
treats the file as untrusted input. A hand-over file is a safetensors file (tensors only: it
cannot run code, and siteflow never unpickles anything) whose header metadata holds one
JSON manifest: the strategy and its options, the model, the chain of sites so far, the
weights' digest, and a signature with the consortium key.

:func:`read_handover` checks everything before it returns anything, and every refusal is a
:class:`HandoverError` that names the file and the reason. ``python -m siteflow.handover
verify FILE`` runs the same checks from the command line; ``keygen`` prints a fresh key.

The limits on a received file, each refused with its reason: only a regular file is read
(no device, FIFO or directory); a safetensors header of at most 16 MiB, its length checked
before it is read; JSON nested at most 32 deep; names without control characters; 1 to
10**9 samples per site; finishing times at most 1 day ahead of the receiver's clock (a
writer lifts its own time to a received one that is ahead, so it never refuses its own
hand-over); weights that are finite (no NaN, no infinity); and, when the receiver names
them, the names, shapes and dtypes of its model's tensors.

The modules, one job each:

- :mod:`~siteflow.handover.errors`: :class:`HandoverError` and :class:`HandoverWarning`.
- :mod:`~siteflow.handover.records`: the rules of the chain of sites
  (:class:`~siteflow.core.types.SiteRecord`: sample counts; times never go backwards, nor
  run ahead of the clock; the relay order).
- :mod:`~siteflow.handover.manifest`: the manifest's fields, format version and validation.
- :mod:`~siteflow.handover.container`: the manifest inside a safetensors header.
- :mod:`~siteflow.handover.jsontext`: strict JSON parsing (nesting bounded) and canonical JSON
  text.
- :mod:`~siteflow.handover.signing`: the HMAC-SHA256 signature and the policy on it.
- :mod:`~siteflow.handover.keys`: loading the consortium key, and making one.
- :mod:`~siteflow.handover.compatibility`: whether a file fits the receiving site (strategy
  and options, model, shapes and dtypes).
- :mod:`~siteflow.handover.writing`: :func:`write_handover`, atomically.
- :mod:`~siteflow.handover.reading`: :func:`read_handover` and :func:`read_manifest`.

What is not particular to hand-over files lives in :mod:`siteflow.core`: reading untrusted
weights safely (a regular file, a bounded header, finite values) and their canonical SHA-256
in :mod:`siteflow.core.io`, :class:`~siteflow.core.types.SiteRecord` in
:mod:`siteflow.core.types`.
"""

from __future__ import annotations

from siteflow.handover.errors import HandoverError, HandoverWarning
from siteflow.handover.keys import KEY_ENV, load_key
from siteflow.handover.manifest import FORMAT_VERSION, Manifest
from siteflow.handover.reading import read_handover, read_manifest
from siteflow.handover.writing import write_handover

__all__ = [
    "FORMAT_VERSION",
    "KEY_ENV",
    "HandoverError",
    "HandoverWarning",
    "Manifest",
    "load_key",
    "read_handover",
    "read_manifest",
    "write_handover",
]
