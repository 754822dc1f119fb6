"""The one error type of unusable site data: :class:`DataError`, raised by the datasets'
preflight :meth:`~siteflow.datasets.base.SiteDataset.check`, by their item reading, and by
their listing of a release's files."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path

# A combined error lists this many problems in its message (its ``paths`` hold them all).
MAX_LISTED = 5


class DataError(ValueError):
    """A data file is missing, unreadable, or not what its dataset expects. The message names
    the file and the problem; ``paths`` holds every bad file (a combined error lists only the
    first :data:`MAX_LISTED` problems in its message)."""

    def __init__(self, message: str, *, paths: Iterable[Path] = ()) -> None:
        super().__init__(message)
        self.paths: tuple[Path, ...] = tuple(paths)


class MissingFileError(DataError, FileNotFoundError):
    """A data file or folder that the layout needs does not exist (a :class:`DataError` and a
    :class:`FileNotFoundError`)."""


def combined(header: str, problems: Sequence[DataError]) -> DataError:
    """One DataError for several: ``header``, then the messages of the first
    :data:`MAX_LISTED` ``problems`` indented below it, then how many more there are; its
    ``paths`` are those of every problem."""
    listed = [textwrap.indent(str(problem), "  ") for problem in problems[:MAX_LISTED]]
    if len(problems) > MAX_LISTED:
        listed.append(f"  ... and {len(problems) - MAX_LISTED} more")
    paths = [path for problem in problems for path in problem.paths]
    return DataError("\n".join([f"{header}:", *listed]), paths=paths)


def empty_split(dataset: str, split: str, available: int, val_fraction: float) -> DataError:
    """The error of a split left empty: ``available`` samples of its release part (training
    samples for train and val, after the unlabelled are left out) and the ``val_fraction``
    that carves val from train; it names the option to change."""
    if split == "test":
        return DataError(f"{dataset}: the test split is empty: the release holds no test samples; a site needs at least one to be tested")
    return DataError(
        f"{dataset}: the {split} split is empty: {available} training sample(s) with val_fraction={val_fraction} "
        f"leave none for it; give the site more images or change the dataset option val_fraction"
    )
