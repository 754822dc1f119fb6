"""Where configs are found: a name under ``configs/`` (the working folder's, then the
configs shipped inside the package) or a YAML file path."""

from __future__ import annotations

from pathlib import Path

from siteflow.core.errors import nearest

PACKAGED_CONFIGS = Path(__file__).resolve().parent.parent / "configs"
"""The configs shipped with siteflow (package data): ``demo/``, ``fundus/``, ``vessels/``."""


def resolve_config_path(config: str | Path) -> tuple[Path, str]:
    """Find a config given as a name under ``configs/`` (no ``.yaml``) or as a file path.

    Returns:
        The file and the experiment's name: the path under ``configs/`` without ``.yaml``
        (``"demo/sequential"``), or the file's stem for a file elsewhere.
    """
    path = Path(config)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        path = path.resolve()
        for root in (Path.cwd() / "configs", PACKAGED_CONFIGS):
            if path.is_relative_to(root.resolve()):
                return path, path.relative_to(root.resolve()).with_suffix("").as_posix()
        return path, path.stem
    for root in (Path.cwd() / "configs", PACKAGED_CONFIGS):
        candidate = root / f"{config}.yaml"
        if candidate.is_file():
            return candidate.resolve(), str(config)
    known = sorted(p.relative_to(PACKAGED_CONFIGS).with_suffix("").as_posix() for p in PACKAGED_CONFIGS.rglob("*.yaml"))
    raise FileNotFoundError(f"config {str(config)!r} not found{nearest(str(config), known)} (known: {', '.join(known)})")
