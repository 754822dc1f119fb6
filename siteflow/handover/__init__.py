"""The hand-over file: a model carried from site to site as one file, verified on arrival.

In a deployed relay the weights travel between hospitals on a disk, so the receiving site
treats the file as untrusted input. A hand-over file is a safetensors file (tensors only: it
cannot run code, and siteflow never unpickles anything) whose header metadata holds one entry,
``"siteflow.handover"``, a JSON manifest:

``format_version``
    ``1``.
``strategy``, ``model``
    the strategy name, and the architecture ``{"name", "kwargs"}`` (the constructor's kwargs,
    ``in_channels`` and ``num_classes`` included).
``sites``
    the chain of sites so far, in order: ``{"task_id", "task_name", "num_samples",
    "finished_at"}``, the time as ISO-8601 with a zero UTC offset; never decreasing.
``weights_sha256``
    SHA-256 over the weights in a canonical form that does not depend on the file layout
    (see :func:`weights_sha256`).
``extra``
    a JSON object for strategy state (relay's merge weight, site codes, ...).
``signature``
    HMAC-SHA256 (hex) with the consortium's shared key over the canonical JSON of the manifest
    without this field (``json.dumps(..., sort_keys=True, separators=(",", ":"))``), or null
    when the writer had no key. Since the manifest holds the weights' digest, the signature
    covers the weights too.

The key (:func:`load_key`) is text: the bytes of a key file (``--key-file``), or else of the
environment variable ``SITEFLOW_HANDOVER_KEY``, with surrounding whitespace removed, so the
same text in either place is the same key; it is used as it is, not hex-decoded. A key file
given explicitly wins over the environment variable. ``python -m siteflow.handover keygen``
prints a fresh key.

Policy on signatures: a receiver with a key refuses an unsigned file or a wrong signature. A
receiver without a key accepts a signed file with a :class:`HandoverWarning` (its signature is
not checked: the receiver chose not to check), and an unsigned one silently; the digest still
catches corruption of the weights, but not deliberate edits.

Site order: the receiver names the consortium's planned sequence of task ids, with every
cycle listed (``[1, 2, 3] * cycles``, so a cyclic relay wraps around only as often as
planned); the file's chain must be the start of that sequence and the receiver its next entry.

:func:`read_handover` checks everything before it returns anything, and every refusal is a
:class:`HandoverError` that names the file and the reason. ``python -m siteflow.handover
verify FILE`` runs the same checks from the command line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import struct
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from siteflow.core.atomic import atomic_path

__all__ = [
    "FORMAT_VERSION",
    "KEY_ENV",
    "HandoverError",
    "HandoverWarning",
    "Manifest",
    "SiteRecord",
    "load_key",
    "read_handover",
    "read_manifest",
    "weights_sha256",
    "write_handover",
]

FORMAT_VERSION = 1
METADATA_KEY = "siteflow.handover"
KEY_ENV = "SITEFLOW_HANDOVER_KEY"
MIN_KEY_BYTES = 16
MAX_HEADER_BYTES = 100_000_000  # the safetensors limit
_FIELDS = {"format_version", "strategy", "model", "sites", "weights_sha256", "extra", "signature"}
_SITE_FIELDS = {"task_id", "task_name", "num_samples", "finished_at"}
_KIND_NAMES = {int: "an integer", str: "a string", dict: "an object", list: "a list"}
_Fail = Callable[[str], "HandoverError"]  # makes the refusal of a malformed manifest from its reason


class HandoverError(ValueError):
    """A hand-over file (or key) that is refused; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class HandoverWarning(UserWarning):
    """A hand-over file accepted without checking its signature (the receiver has no key)."""


@dataclass(frozen=True)
class SiteRecord:
    """One site of the chain: which site trained, on how many samples, finished when (UTC)."""

    task_id: int
    task_name: str
    num_samples: int
    finished_at: str

    @classmethod
    def finished_now(cls, task_id: int, task_name: str, num_samples: int) -> SiteRecord:
        """The record of a site that finishes now."""
        return cls(task_id, task_name, num_samples, datetime.now(timezone.utc).isoformat(timespec="seconds"))


@dataclass(frozen=True)
class Manifest:
    """The manifest of a hand-over file (see the module documentation for each field)."""

    format_version: int
    strategy: str
    model_name: str
    model_kwargs: dict[str, Any]
    sites: tuple[SiteRecord, ...]
    weights_sha256: str
    extra: dict[str, Any]
    signature: str | None

    def to_dict(self) -> dict[str, Any]:
        """The manifest as the JSON object stored in the file."""
        return {
            "format_version": self.format_version,
            "strategy": self.strategy,
            "model": {"name": self.model_name, "kwargs": self.model_kwargs},
            "sites": [dataclasses.asdict(site) for site in self.sites],
            "weights_sha256": self.weights_sha256,
            "extra": self.extra,
            "signature": self.signature,
        }


def weights_sha256(weights: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of ``weights`` in a canonical form, independent of the file layout.

    Hashed in order: the number of tensors, then for each name in sorted order its UTF-8
    name, its dtype (``"float32"``), its number of dimensions and each dimension, and its
    data as raw bytes in C order as torch holds them in memory: little-endian, as in
    safetensors, on the little-endian machines siteflow runs on (x86-64, ARM64). Strings and
    data are preceded by their length in bytes; every number is an unsigned 64-bit
    little-endian integer.
    """
    digest = hashlib.sha256(struct.pack("<Q", len(weights)))
    for name in sorted(weights):
        tensor = weights[name].detach().cpu().contiguous()
        _update_sized(digest, name.encode("utf-8"))
        _update_sized(digest, str(tensor.dtype).removeprefix("torch.").encode("ascii"))
        digest.update(struct.pack(f"<Q{tensor.dim()}Q", tensor.dim(), *tensor.shape))
        _update_sized(digest, tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _update_sized(digest: Any, data: Any) -> None:
    """Feed ``data`` (bytes-like) to ``digest``, preceded by its length in bytes."""
    digest.update(struct.pack("<Q", memoryview(data).nbytes))
    digest.update(data)


def load_key(key_file: str | os.PathLike | None = None) -> bytes | None:
    """The consortium key: from ``key_file`` if given, else ``$SITEFLOW_HANDOVER_KEY``, else None.

    The key is the text of the file or variable, surrounding whitespace removed, as bytes.
    A key shorter than 16 bytes is refused (a variable that is set but empty too).
    """
    if key_file is not None:
        source = str(key_file)
        try:
            key = Path(key_file).read_bytes().strip()
        except OSError as error:
            raise HandoverError(source, f"cannot read the key file: {error.strerror}") from None
    elif KEY_ENV in os.environ:
        source, key = f"${KEY_ENV}", os.fsencode(os.environ[KEY_ENV]).strip()
    else:
        return None
    if len(key) < MIN_KEY_BYTES:
        raise HandoverError(
            source,
            f"the key is {len(key)} bytes long, at least {MIN_KEY_BYTES} are needed "
            "(`python -m siteflow.handover keygen` prints a fresh one)",
        )
    return key


def write_handover(
    path: str | os.PathLike,
    weights: Mapping[str, torch.Tensor],
    *,
    strategy: str,
    model_name: str,
    model_kwargs: Mapping[str, Any],
    sites: Sequence[SiteRecord],
    extra: Mapping[str, Any] | None = None,
    key: bytes | None = None,
) -> Manifest:
    """Write ``weights`` and their manifest to ``path`` atomically; return the manifest.

    ``model_kwargs`` and ``extra`` must be JSON (tuples become lists; the returned manifest
    holds them as a reader will see them). With ``key``, the manifest is signed.
    """
    tensors = {}
    for name, tensor in weights.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"weights[{name!r}] is a {type(tensor).__name__}, not a tensor")
        tensors[name] = tensor.detach().cpu().contiguous()
    manifest = {
        "format_version": FORMAT_VERSION,
        "strategy": strategy,
        "model": {"name": model_name, "kwargs": _as_json(model_kwargs)},
        "sites": [dataclasses.asdict(site) for site in sites],
        "weights_sha256": weights_sha256(tensors),
        "extra": _as_json(extra or {}),
        "signature": None,
    }
    if key is not None:
        manifest["signature"] = _signature(manifest, key)
    result = _parse_manifest(path, manifest)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: _canonical_json(manifest)})
    return result


def read_manifest(path: str | os.PathLike, *, key: bytes | None = None) -> Manifest:
    """The manifest of the hand-over file ``path``, reading only its header.

    Checks the manifest's form and, with ``key``, its signature (see the module documentation
    for the policy); the weights are not read, so their digest is not checked.
    """
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            start = handle.read(8)
            header = handle.read(_header_length(path, start, size))
    except OSError as error:
        raise HandoverError(path, f"cannot read the file: {error.strerror}") from None
    manifest = _manifest_from_header(path, header)
    _check_signature(path, manifest, key)
    return manifest


def read_handover(
    path: str | os.PathLike,
    *,
    key: bytes | None = None,
    strategy: str | None = None,
    model_name: str | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    expected_shapes: Mapping[str, Sequence[int]] | None = None,
    receiving_task_id: int | None = None,
    site_order: Sequence[int] | None = None,
) -> tuple[dict[str, torch.Tensor], Manifest]:
    """Read and verify the hand-over file ``path``; return its weights and manifest.

    Always checked: the file is a safetensors file with a well-formed manifest of a known
    format version, and the weights match the manifest's digest. With ``key``: the signature
    (see the module documentation for the policy). Each other argument given is compared
    with the file: ``strategy``, ``model_name``, ``model_kwargs`` (all of them, so a
    different ``num_classes`` is refused), ``expected_shapes`` (name -> shape of every tensor
    this site expects, e.g. ``{k: v.shape for k, v in model.state_dict().items()}``: the same
    names, the same shapes).

    ``site_order`` is the consortium's planned sequence of task ids, each cycle listed
    (``[1, 2, 3] * cycles``): the file's chain must be the start of it, and
    ``receiving_task_id`` (which needs ``site_order``) the next entry.

    Raises:
        HandoverError: naming the file and the first check that failed.
    """
    if receiving_task_id is not None and site_order is None:
        raise TypeError("read_handover: receiving_task_id needs the site_order it is checked against")
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise HandoverError(path, f"cannot read the file: {error.strerror}") from None
    manifest = _manifest_from_header(path, data[8 : 8 + _header_length(path, data[:8], len(data))])
    _check_signature(path, manifest, key)
    _check_model(path, manifest, strategy, model_name, model_kwargs)
    if site_order is not None:
        _check_order(path, manifest.sites, list(site_order), receiving_task_id)
    try:
        weights = load_safetensors(data)
    except Exception as error:  # the parser meets untrusted bytes: whatever it raises is a refusal
        raise HandoverError(path, f"not a valid safetensors file: {type(error).__name__}: {error}") from None
    if not hmac.compare_digest(weights_sha256(weights), manifest.weights_sha256):
        raise HandoverError(path, "the weights do not match the manifest's SHA-256 digest (corrupted or altered)")
    if expected_shapes is not None:
        _check_shapes(path, weights, expected_shapes)
    return weights, manifest


def _header_length(path: str | os.PathLike, start: bytes, size: int) -> int:
    """The header length that the first 8 bytes of a safetensors file of ``size`` bytes give."""
    if len(start) == 8:
        length = struct.unpack("<Q", start)[0]
        if 2 <= length <= min(size - 8, MAX_HEADER_BYTES):
            return length
    raise HandoverError(path, f"not a safetensors hand-over file: {_what_else(start)}")


def _what_else(start: bytes) -> str:
    """What a file that starts with ``start`` and is not safetensors seems to be."""
    if start.startswith(b"PK\x03\x04"):
        return "it is a zip archive, as torch.save writes (siteflow never unpickles files)"
    if start[:1] == b"\x80" and start[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "it is a Python pickle (siteflow never unpickles files)"
    return "its header is cut short or absent"


def _manifest_from_header(path: str | os.PathLike, header: bytes) -> Manifest:
    """Parse the safetensors header bytes of ``path`` down to its validated manifest."""
    try:
        parsed = _strict_json(header.decode("utf-8"))
    except ValueError as error:
        raise HandoverError(path, f"not a safetensors hand-over file: malformed header ({error})") from None
    metadata = parsed.get("__metadata__") if isinstance(parsed, dict) else None
    if not isinstance(metadata, dict) or METADATA_KEY not in metadata:
        raise HandoverError(path, f"a safetensors file without a hand-over manifest (no {METADATA_KEY!r} entry)")
    if metadata.keys() != {METADATA_KEY}:
        unexpected = sorted(metadata.keys() - {METADATA_KEY})
        raise HandoverError(path, f"unexpected metadata entries besides {METADATA_KEY!r}: {unexpected}")
    if not isinstance(metadata[METADATA_KEY], str):
        raise HandoverError(path, "malformed manifest: not a string")
    try:
        manifest = _strict_json(metadata[METADATA_KEY])
    except ValueError as error:
        raise HandoverError(path, f"malformed manifest JSON ({error})") from None
    return _parse_manifest(path, manifest)


def _strict_json(text: str) -> Any:
    """``json.loads`` that refuses repeated keys and NaN/Infinity."""

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result = dict(pairs)
        if len(result) != len(pairs):
            raise ValueError(f"repeated key in {[name for name, _ in pairs]}")
        return result

    def no_constant(name: str) -> None:
        raise ValueError(f"{name} is not a number")

    return json.loads(text, object_pairs_hook=unique, parse_constant=no_constant)


def _parse_manifest(path: str | os.PathLike, manifest: Any) -> Manifest:
    """Validate the manifest's JSON object field by field; the manifest as a :class:`Manifest`."""

    def fail(reason: str) -> HandoverError:
        return HandoverError(path, f"malformed manifest: {reason}")

    def get(obj: Mapping[str, Any], name: str, kind: type, where: str = "") -> Any:
        value = obj[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise fail(f"{where}{name} is {value!r}, not {_KIND_NAMES[kind]}")
        return value

    if not isinstance(manifest, dict):
        raise fail("not a JSON object")
    if "format_version" not in manifest:
        raise fail("no format_version")
    version = get(manifest, "format_version", int)
    if version != FORMAT_VERSION:
        raise HandoverError(path, f"unsupported format_version {version} (this siteflow reads {FORMAT_VERSION})")
    _check_fields(manifest, _FIELDS, "", fail)
    model = get(manifest, "model", dict)
    _check_fields(model, {"name", "kwargs"}, "model.", fail)
    sites = []
    for index, site in enumerate(get(manifest, "sites", list)):
        where = f"sites[{index}]."
        if not isinstance(site, dict):
            raise fail(f"sites[{index}] is not an object")
        _check_fields(site, _SITE_FIELDS, where, fail)
        record = SiteRecord(
            get(site, "task_id", int, where),
            get(site, "task_name", str, where),
            get(site, "num_samples", int, where),
            get(site, "finished_at", str, where),
        )
        if record.num_samples < 0:
            raise fail(f"{where}num_samples is negative")
        sites.append(record)
    _check_times(sites, fail)
    digest = get(manifest, "weights_sha256", str)
    if not _is_hex_digest(digest):
        raise fail("weights_sha256 is not 64 lowercase hex digits")
    signature = manifest["signature"]
    if signature is not None and not (isinstance(signature, str) and _is_hex_digest(signature)):
        raise fail("signature is neither null nor 64 lowercase hex digits")
    return Manifest(
        format_version=version,
        strategy=get(manifest, "strategy", str),
        model_name=get(model, "name", str, "model."),
        model_kwargs=get(model, "kwargs", dict, "model."),
        sites=tuple(sites),
        weights_sha256=digest,
        extra=get(manifest, "extra", dict),
        signature=signature,
    )


def _check_fields(obj: Mapping[str, Any], fields: set[str], where: str, fail: _Fail) -> None:
    """Refuse ``obj`` unless its keys are exactly ``fields``."""
    missing, unknown = sorted(fields - obj.keys()), sorted(obj.keys() - fields)
    if missing or unknown:
        raise fail(f"{where or 'manifest '}fields: missing {missing}, unknown {unknown}")


def _check_times(sites: Sequence[SiteRecord], fail: _Fail) -> None:
    """Refuse finishing times that are not ISO-8601 UTC, or that go backwards along the chain."""
    previous = None
    for index, site in enumerate(sites):
        try:
            time = datetime.fromisoformat(site.finished_at)
        except ValueError:
            time = None
        if time is None or time.utcoffset() != timedelta(0):
            raise fail(f"sites[{index}].finished_at {site.finished_at!r} is not an ISO-8601 UTC time")
        if previous is not None and time < previous:
            raise fail(f"sites out of order: sites[{index}] (task {site.task_id}) finished before sites[{index - 1}]")
        previous = time


def _is_hex_digest(text: str) -> bool:
    return len(text) == 64 and all(char in "0123456789abcdef" for char in text)


def _as_json(value: Mapping[str, Any]) -> dict[str, Any]:
    """``value`` as JSON reads it back (tuples become lists); refuses what JSON cannot hold."""
    return json.loads(json.dumps(value, allow_nan=False))


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _signature(manifest: Mapping[str, Any], key: bytes) -> str:
    """HMAC-SHA256 (hex) of the canonical JSON of ``manifest`` without its signature."""
    unsigned = {name: value for name, value in manifest.items() if name != "signature"}
    return hmac.new(key, _canonical_json(unsigned).encode("utf-8"), hashlib.sha256).hexdigest()


def _check_signature(path: str | os.PathLike, manifest: Manifest, key: bytes | None) -> None:
    """Apply the signature policy (see the module documentation)."""
    if key is None:
        if manifest.signature is not None:
            message = f"{path}: signed, but no key was given: the signature is not checked"
            warnings.warn(message, HandoverWarning, stacklevel=3)
    elif manifest.signature is None:
        raise HandoverError(path, "the file is not signed, but a consortium key is set")
    elif not hmac.compare_digest(_signature(manifest.to_dict(), key), manifest.signature):
        raise HandoverError(path, "wrong signature: signed with another key, or edited after signing")


def _check_model(
    path: str | os.PathLike,
    manifest: Manifest,
    strategy: str | None,
    model_name: str | None,
    model_kwargs: Mapping[str, Any] | None,
) -> None:
    """Refuse a file written by another strategy or for another architecture."""
    if strategy is not None and manifest.strategy != strategy:
        raise HandoverError(path, f"written by strategy {manifest.strategy!r}, this site runs {strategy!r}")
    if model_name is not None and manifest.model_name != model_name:
        raise HandoverError(path, f"holds a {manifest.model_name!r} model, this site builds a {model_name!r}")
    if model_kwargs is not None:
        ours, theirs = _as_json(model_kwargs), manifest.model_kwargs
        differences = [
            f"{name} (file: {json.dumps(theirs.get(name))}, this site: {json.dumps(ours.get(name))})"
            for name in sorted(ours.keys() | theirs.keys())
            if name not in ours or name not in theirs or ours[name] != theirs[name]
        ]
        if differences:
            raise HandoverError(path, f"a different model architecture: {'; '.join(differences)}")


def _check_order(path: str | os.PathLike, sites: Sequence[SiteRecord], order: list[int], receiving: int | None) -> None:
    """Refuse a chain that is not the start of ``order``, or a ``receiving`` site that is not next."""
    for index, site in enumerate(sites):
        if index >= len(order):
            reason = f"the chain has {len(sites)} sites, the relay order {order} plans {len(order)}"
            raise HandoverError(path, f"site out of order: {reason}")
        if site.task_id != order[index]:
            raise HandoverError(
                path,
                f"site out of order: site {index + 1} of the chain is task {site.task_id} ({site.task_name}), "
                f"the relay order {order} has task {order[index]} there",
            )
    if receiving is not None and (len(sites) >= len(order) or order[len(sites)] != receiving):
        after = f"task {sites[-1].task_id} ({sites[-1].task_name})" if sites else "no site yet"
        expected = f"task {order[len(sites)]}" if len(sites) < len(order) else "no one (the relay is over)"
        raise HandoverError(
            path,
            f"site out of order: the chain ends with {after}, so by the relay order {order} "
            f"the next site is {expected}, not task {receiving}",
        )


def _check_shapes(
    path: str | os.PathLike, weights: Mapping[str, torch.Tensor], expected: Mapping[str, Sequence[int]]
) -> None:
    """Refuse weights whose names or shapes differ from ``expected``."""
    problems = [f"missing {name!r}" for name in sorted(expected.keys() - weights.keys())]
    problems += [f"unexpected {name!r}" for name in sorted(weights.keys() - expected.keys())]
    for name in sorted(expected.keys() & weights.keys()):
        theirs, ours = list(weights[name].shape), [int(size) for size in expected[name]]
        if theirs != ours:
            problems.append(f"{name!r} has shape {theirs}, this site's model {ours}")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise HandoverError(path, f"the weights do not fit this site's model: {shown}")
