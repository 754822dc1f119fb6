"""Names and paths of a config that become folders and files of a run.

A site's ``task_name`` names its folder (``sites/<name>``), its weights and its columns of the
site matrix; a ``checkpoint.save`` folder (and a strategy's ``save_dir``) lies under the run's
``checkpoints/``. None may leave the run folder, and no two sites may share one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from siteflow.config.validation import ConfigError
from siteflow.core.atomic import safe_name

SEPARATORS = ("/", "\\")


def check_site_names(names: Sequence[tuple[str, str]]) -> None:
    """Check ``(key path, task_name)`` of every site: a non-empty name without path
    separators or ``..``, different from every other site's, in files too (where
    :func:`~siteflow.core.atomic.safe_name` replaces some characters)."""
    seen: dict[str, str] = {}
    for key_path, name in names:
        _check_site_name(name, key_path)
        file_name = safe_name(name)
        if file_name in seen:
            raise ConfigError(key_path, _clash(seen[file_name], name, file_name))
        seen[file_name] = name


def _clash(other: str, name: str, file_name: str) -> str:
    """Why site ``name`` cannot be used after site ``other`` (both ``file_name`` in files)."""
    if other == name:
        return f"site name {name!r} is taken by another site; give every site its own name"
    return f"site names {other!r} and {name!r} both become {file_name!r} in file names; rename one"


def _check_site_name(name: str, key_path: str) -> None:
    """Refuse an empty site name or one that could name a path."""
    if not name.strip():
        raise ConfigError(key_path, "is empty; name the site")
    if any(separator in name for separator in SEPARATORS) or ".." in name or name == ".":
        raise ConfigError(key_path, f"site name {name!r} holds a path ('/', '\\\\', '.' or '..'); name the site only")


def checkpoint_folder(folder: str, key_path: str) -> str:
    """``folder``, a folder under the run's ``checkpoints/``, normalised (``./a/`` -> ``a``).

    Raises:
        ConfigError: for an absolute path, or one that leaves ``checkpoints/`` or is it.
    """
    if os.path.isabs(folder):
        raise ConfigError(key_path, f"{folder!r} is an absolute path; name a folder under the run's checkpoints/")
    normalised = os.path.normpath(folder)
    if normalised == os.curdir or normalised.split(os.sep)[0] == os.pardir:
        raise ConfigError(key_path, f"{folder!r} is not a folder under the run's checkpoints/")
    return normalised


def check_distinct_folders(folders: Sequence[tuple[str, str]]) -> None:
    """Refuse two ``(key path, normalised folder)`` that are the same folder."""
    seen: dict[str, str] = {}
    for key_path, folder in folders:
        if folder in seen:
            raise ConfigError(key_path, f"{folder!r}: two sites save into the same folder (see {seen[folder]})")
        seen[folder] = key_path


def check_load(path: str, key_path: str) -> None:
    """A ``checkpoint.load`` file: relative (under ``checkpoints/``) or absolute (a received
    file), not empty and not a folder."""
    if not path.strip():
        raise ConfigError(key_path, "is empty; name a weights file or leave it out")
    try:
        folder = os.path.isabs(path) and Path(path).is_dir()
    except (OSError, ValueError) as error:
        raise ConfigError(key_path, f"{path!r} cannot be checked: {error}") from None
    if folder:
        raise ConfigError(key_path, f"{path!r} is a folder; name the weights file in it")


def run_folder(exps_root: Path, experiment: str, note: str, *, note_key: str = "-n/--note") -> Path:
    """The run folder ``<exps_root>/<experiment>/<note>``, which must lie inside ``exps_root``.

    ``note`` (the run's name, given as ``note_key``) is one folder name: not empty, without
    path separators, ``.`` or ``..`` or control characters; ``experiment`` (the config's name,
    e.g. ``demo/fedavg``) is a relative path that stays below ``exps_root``; the folder, with
    any symbolic link on the way followed, must lie inside ``exps_root`` (followed too).

    Raises:
        ConfigError: naming ``note_key`` (or ``config`` for the experiment's name) and why.
    """
    if not note.strip() or any(s in note for s in SEPARATORS) or note in (".", "..") or not note.isprintable():
        raise ConfigError(note_key, f"{note!r} is not a run name: give one folder name, without '/', '\\\\', '..' or control characters")
    normalised = os.path.normpath(experiment)
    if os.path.isabs(experiment) or normalised == os.curdir or normalised.split(os.sep)[0] == os.pardir:
        raise ConfigError("config", f"the experiment's name {experiment!r} would place the run outside {str(exps_root)!r}")
    path = exps_root / normalised / note
    root = exps_root.resolve()
    if not path.resolve().is_relative_to(root):
        raise ConfigError(note_key, f"{str(path)!r} leads outside the exps root {str(root)!r} (through a symbolic link)")
    return path
