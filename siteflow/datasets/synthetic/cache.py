"""A generated data set cached on disk, keyed by its generator's parameters.

Generation writes into a temporary sibling folder, adds a marker file holding the
parameters, then renames the folder into place: a reader never sees a half-written set, and
when several processes generate at once the first rename wins and the others use its result.

The cache root is siteflow's own: a folder it creates, or an empty one, is marked with
:data:`ROOT_MARKER`; a folder that is neither marked nor holds only generated sets (an older
cache, marked then) is refused, so a mistyped ``root_path`` (``/``, a home folder, a
hospital's image archive) is never written to.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from siteflow.datasets.errors import DataError

MARKER = "siteflow_synthetic.json"
ROOT_MARKER = ".siteflow_synthetic_cache"
"""The file that marks a cache root as siteflow's own."""
# Bump when the generator's output changes, so that old caches are not reused.
GENERATOR_VERSION = 1


def cached_generation(
    cache_root: str | Path, kind: str, params: dict[str, Any], generate: Callable[[Path], Any]
) -> Path:
    """The folder ``<cache_root>/<kind>-<hash of params>`` holding ``generate``'s output,
    generating it first (``generate(folder)``) if it is not there yet.

    Raises ValueError if an existing folder's marker holds other parameters, and
    :class:`~siteflow.datasets.errors.DataError` if ``cache_root`` is not siteflow's own (see
    :func:`claim_root`).
    """
    content = {"kind": kind, "version": GENERATOR_VERSION, "params": params}
    marker = json.dumps(content, sort_keys=True)
    key = hashlib.sha256(marker.encode()).hexdigest()[:12]
    cache_root = Path(cache_root)
    target = cache_root / f"{kind}-{key}"
    if not (target / MARKER).is_file():
        claim_root(cache_root)
        scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=cache_root))
        try:
            generate(scratch)
            (scratch / MARKER).write_text(marker)
            scratch.chmod(0o755)
            os.rename(scratch, target)
        except OSError:
            if not (target / MARKER).is_file():  # not a lost race: a real failure
                raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    found = (target / MARKER).read_text()
    if found != marker:
        raise ValueError(f"cache folder {target} holds another data set: {found}")
    return target


def claim_root(cache_root: Path) -> None:
    """Make ``cache_root`` a marked cache root: create it (parents too) if missing, mark it if
    it is empty or holds only generated sets; refuse any other folder.

    Raises:
        DataError: naming the folder and a few of the entries that are not siteflow's."""
    cache_root.mkdir(parents=True, exist_ok=True)
    if (cache_root / ROOT_MARKER).is_file():
        return
    foreign = sorted(entry.name for entry in cache_root.iterdir() if not _generated(entry))
    if foreign:
        raise DataError(
            f"root_path {str(cache_root)!r}: not a folder siteflow made for generated data (it holds {foreign[:3]}"
            f"{' and more' if len(foreign) > 3 else ''}); name a new or empty folder, nothing was written",
            paths=[cache_root],
        )
    (cache_root / ROOT_MARKER).write_text("siteflow's synthetic data cache\n")


def _generated(entry: Path) -> bool:
    """Whether ``entry`` of a cache root is siteflow's: a generated set, a scratch folder or a marker."""
    if entry.name == ROOT_MARKER:
        return True
    return entry.is_dir() and not entry.is_symlink() and ((entry / MARKER).is_file() or (entry.name.startswith(".") and ".tmp-" in entry.name))
