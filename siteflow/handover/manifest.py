"""The manifest: the JSON object a hand-over file carries, its format version, and its validation.

Fields of format version 1 (exactly these; no others):

``format_version``
    ``1``.
``strategy``, ``model``
    the strategy name, and the architecture ``{"name", "kwargs"}`` (the constructor's kwargs,
    ``in_channels`` and ``num_classes`` included).
``strategy_options``
    the strategy's options (its config ``kwargs``) as a JSON object; a receiver that names
    its own options refuses a file written with other ones (see
    :func:`siteflow.handover.compatibility.check_strategy`).
``sites``
    the chain of sites so far, in order: ``{"task_id", "task_name", "num_samples",
    "finished_at"}``, the number of samples from 1 to 10**9, the time as ISO-8601 with a
    zero UTC offset; never decreasing (see :mod:`siteflow.handover.records`).
``weights_sha256``
    SHA-256 over the weights in a canonical form that does not depend on the file layout
    (see :func:`siteflow.core.io.weights_sha256`).
``extra``
    a JSON object for strategy state (relay's merge weight, site codes, ...).
``signature``
    HMAC-SHA256 (hex) with the consortium's key over the canonical JSON of the manifest
    without this field, or null when the writer had no key (see :mod:`siteflow.handover.signing`).

Names and times (``strategy``, ``model.name``, each ``task_name`` and ``finished_at``) hold
no control characters: no C0/C1 controls (newline, escape, ...), format characters
(bidirectional overrides, zero-width characters), line or paragraph separators, or lone
surrogates, so a name printed on a line is that name, on that line.

Manifests without ``strategy_options``: the field came after version 1 was first written, so
such a manifest (from an older siteflow) is still well-formed; its
:attr:`Manifest.strategy_options` is None ("not recorded"), it is signed and verified without
the field, and a receiver that asks for the options check refuses it, since nothing shows
that it was written with the same options. This siteflow always writes the field.
"""

from __future__ import annotations

import dataclasses
import os
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from siteflow.core.types import SiteRecord
from siteflow.handover.errors import Fail, HandoverError
from siteflow.handover.records import check_finishing_times, check_sample_count

__all__ = ["FORMAT_VERSION", "Manifest", "parse_manifest"]

FORMAT_VERSION = 1
_FIELDS = {"format_version", "strategy", "model", "sites", "weights_sha256", "extra", "signature"}
_OPTIONAL_FIELDS = {"strategy_options"}  # absent from manifests of an older siteflow (see above)
_MODEL_FIELDS = {"name", "kwargs"}
_SITE_FIELDS = {"task_id", "task_name", "num_samples", "finished_at"}
_KIND_NAMES = {int: "an integer", str: "a string", dict: "an object", list: "a list"}
_CONTROL_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs"}
"""The Unicode categories refused in names and times: controls, format characters, line and
paragraph separators, surrogates."""


@dataclass(frozen=True)
class Manifest:
    """The manifest of a hand-over file (see the module documentation for each field).

    ``strategy_options`` is None for a manifest written before the field existed.
    """

    format_version: int
    strategy: str
    strategy_options: dict[str, Any] | None
    model_name: str
    model_kwargs: dict[str, Any]
    sites: tuple[SiteRecord, ...]
    weights_sha256: str
    extra: dict[str, Any]
    signature: str | None

    def to_dict(self) -> dict[str, Any]:
        """The manifest as the JSON object stored in the file (without an unrecorded field)."""
        manifest = {
            "format_version": self.format_version,
            "strategy": self.strategy,
            "strategy_options": self.strategy_options,
            "model": {"name": self.model_name, "kwargs": self.model_kwargs},
            "sites": [dataclasses.asdict(site) for site in self.sites],
            "weights_sha256": self.weights_sha256,
            "extra": self.extra,
            "signature": self.signature,
        }
        if self.strategy_options is None:
            del manifest["strategy_options"]
        return manifest


def parse_manifest(path: str | os.PathLike, manifest: Any) -> Manifest:
    """Validate the manifest's JSON object field by field; the manifest as a :class:`Manifest`.

    Raises:
        HandoverError: naming ``path`` and the first field that is malformed, or an
            unsupported format version.
    """

    def fail(reason: str) -> HandoverError:
        return HandoverError(path, f"malformed manifest: {reason}")

    def get(obj: Mapping[str, Any], name: str, kind: type, where: str = "") -> Any:
        value = obj[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise fail(f"{where}{name} is {value!r}, not {_KIND_NAMES[kind]}")
        return value

    def get_text(obj: Mapping[str, Any], name: str, where: str = "") -> str:
        value = get(obj, name, str, where)
        control = next((char for char in value if unicodedata.category(char) in _CONTROL_CATEGORIES), None)
        if control is not None:
            raise fail(f"{where}{name} {value!r} holds a control character (U+{ord(control):04X})")
        return value

    if not isinstance(manifest, dict):
        raise fail("not a JSON object")
    if "format_version" not in manifest:
        raise fail("no format_version")
    version = get(manifest, "format_version", int)
    if version != FORMAT_VERSION:
        raise HandoverError(path, f"unsupported format_version {version} (this siteflow reads {FORMAT_VERSION})")
    _check_fields(manifest, _FIELDS, "", fail, optional=_OPTIONAL_FIELDS)
    model = get(manifest, "model", dict)
    _check_fields(model, _MODEL_FIELDS, "model.", fail)
    sites = []
    for index, site in enumerate(get(manifest, "sites", list)):
        where = f"sites[{index}]."
        if not isinstance(site, dict):
            raise fail(f"sites[{index}] is not an object")
        _check_fields(site, _SITE_FIELDS, where, fail)
        task_id, task_name = get(site, "task_id", int, where), get_text(site, "task_name", where)
        samples = check_sample_count(site["num_samples"], f"{where}num_samples", f"task {task_id} ({task_name!r})", fail)
        sites.append(SiteRecord(task_id, task_name, samples, get_text(site, "finished_at", where)))
    check_finishing_times(sites, fail)
    digest = get(manifest, "weights_sha256", str)
    if not is_hex_digest(digest):
        raise fail("weights_sha256 is not 64 lowercase hex digits")
    signature = manifest["signature"]
    if signature is not None and not (isinstance(signature, str) and is_hex_digest(signature)):
        raise fail("signature is neither null nor 64 lowercase hex digits")
    return Manifest(
        format_version=version,
        strategy=get_text(manifest, "strategy"),
        strategy_options=get(manifest, "strategy_options", dict) if "strategy_options" in manifest else None,
        model_name=get_text(model, "name", "model."),
        model_kwargs=get(model, "kwargs", dict, "model."),
        sites=tuple(sites),
        weights_sha256=digest,
        extra=get(manifest, "extra", dict),
        signature=signature,
    )


def _check_fields(
    obj: Mapping[str, Any], fields: set[str], where: str, fail: Fail, *, optional: set[str] | None = None
) -> None:
    """Refuse ``obj`` unless its keys are all of ``fields`` and perhaps some of ``optional``."""
    missing, unknown = sorted(fields - obj.keys()), sorted(obj.keys() - fields - (optional or set()))
    if missing or unknown:
        raise fail(f"{where or 'manifest '}fields: missing {missing}, unknown {unknown}")


def is_hex_digest(text: str) -> bool:
    """Whether ``text`` is a SHA-256 digest as the manifest writes it: 64 lowercase hex digits."""
    return len(text) == 64 and all(char in "0123456789abcdef" for char in text)
