"""Optional packages: imported when a feature first uses them, refused with the extra to install.

``pip install siteflow`` installs what training a local model needs; the other parts are
extras (``pip install 'siteflow[flower]'``, ``[privacy]``, ``[volumes]``, ``[export]``,
``[report]``, or ``[all]``). A module that uses an optional package names it with :func:`optional_module`
instead of importing it: the module imports, and the package is imported the first time an
attribute of it is used. Without the package that first use raises :class:`MissingExtra`,
one sentence naming the feature, the package and the extra.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["EXTRAS", "MissingExtra", "optional_module", "require"]

EXTRAS = {
    "flower": "federated training deployed on Flower, and central differential privacy",
    "privacy": "DP-SGD at the sites (Opacus)",
    "volumes": "reading and writing medical image files: NIfTI and other volumes, DICOM",
    "export": "exporting a model (ONNX) and DICOM Segmentation outputs",
    "report": "pictures: the HTML reports of a run and a study, and a run's PNGs (matplotlib)",
}
"""The extras and what each one adds."""


class MissingExtra(ImportError):
    """A feature used without the optional package it needs; says which extra installs it."""


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module`` for ``feature``, or raise :class:`MissingExtra` naming ``extra``."""
    _check_extra(extra)
    try:
        return importlib.import_module(module)
    except ImportError as error:
        package = module.split(".")[0]
        raise MissingExtra(f"{feature} needs {package}, which is not installed: pip install 'siteflow[{extra}]'") from error


class _LazyModule:
    """A module imported on first attribute access (see :func:`optional_module`)."""

    def __init__(self, module: str, extra: str, feature: str) -> None:
        self._spec = (module, extra, feature)
        self._module: ModuleType | None = None

    def __getattr__(self, name: str) -> Any:
        if self._module is None:
            self._module = require(*self._spec)
        return getattr(self._module, name)

    def __repr__(self) -> str:
        return f"<optional module {self._spec[0]!r} (siteflow[{self._spec[1]}])>"


def optional_module(module: str, extra: str, feature: str) -> Any:
    """``module``, imported when one of its attributes is first used: ``sitk =
    optional_module("SimpleITK", "volumes", "reading NIfTI volumes")`` then ``sitk.ReadImage``.
    Without the package, that first use raises :class:`MissingExtra`: ``"reading NIfTI
    volumes needs SimpleITK, which is not installed: pip install 'siteflow[volumes]'"``."""
    _check_extra(extra)
    return _LazyModule(module, extra, feature)


def _check_extra(extra: str) -> None:
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r} (known: {', '.join(EXTRAS)})")
