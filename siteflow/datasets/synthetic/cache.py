"""A generated data set cached on disk, keyed by its generator's parameters.

Generation writes into a temporary sibling folder, adds a marker file holding the
parameters, then renames the folder into place: a reader never sees a half-written set, and
when several processes generate at once the first rename wins and the others use its result.
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

MARKER = "siteflow_synthetic.json"
# Bump when the generator's output changes, so that old caches are not reused.
GENERATOR_VERSION = 1


def cached_generation(
    cache_root: str | Path, kind: str, params: dict[str, Any], generate: Callable[[Path], Any]
) -> Path:
    """The folder ``<cache_root>/<kind>-<hash of params>`` holding ``generate``'s output,
    generating it first (``generate(folder)``) if it is not there yet.

    Raises ValueError if an existing folder's marker holds other parameters.
    """
    content = {"kind": kind, "version": GENERATOR_VERSION, "params": params}
    marker = json.dumps(content, sort_keys=True)
    key = hashlib.sha256(marker.encode()).hexdigest()[:12]
    cache_root = Path(cache_root)
    target = cache_root / f"{kind}-{key}"
    if not (target / MARKER).is_file():
        cache_root.mkdir(parents=True, exist_ok=True)
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
