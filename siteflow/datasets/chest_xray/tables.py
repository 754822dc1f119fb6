"""Reading the label tables (CSV, optionally gzip-compressed) and file lists of chest X-ray
releases, with errors (:class:`~siteflow.datasets.errors.DataError`) that name the file, the
row and the column."""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from siteflow.datasets.chest_xray.labels import canonical_label, parse_label
from siteflow.datasets.errors import DataError, MissingFileError


@dataclass(frozen=True)
class Table:
    """A CSV file: its path, header and rows (lists of cells, as strings)."""

    path: Path
    header: tuple[str, ...]
    rows: list[list[str]]

    def index(self, column: str) -> int:
        """Position of ``column``; raises DataError naming the file and the column."""
        if column not in self.header:
            raise DataError(
                f"{self.path} has no column {column!r} (columns: {list(self.header)})", paths=[self.path]
            )
        return self.header.index(column)

    def column(self, column: str) -> list[str]:
        """The cells of ``column``, one per row."""
        position = self.index(column)
        return [row[position] for row in self.rows]

    def label_columns(self, labels: Sequence[str]) -> list[int]:
        """Positions of the columns of the canonical findings ``labels`` (a column matches when
        its canonical name does); raises DataError naming the file and the finding."""
        positions = {canonical_label(name): i for i, name in enumerate(self.header)}
        missing = [label for label in labels if label not in positions]
        if missing:
            raise DataError(
                f"{self.path} has no column for the labels {missing} (columns: {list(self.header)})",
                paths=[self.path],
            )
        return [positions[label] for label in labels]

    def label_values(self, row: int, positions: Sequence[int]) -> tuple[float, ...]:
        """Raw values (1, 0, -1 or NaN) of row ``row`` (0-based, after the header) in the
        columns at ``positions``."""
        cells = self.rows[row]
        return tuple(
            parse_label(cells[i], f"{self.path} row {row + 2} column {self.header[i]!r}")
            for i in positions
        )


def find_table(folder: Path, name: str) -> Path:
    """``folder/name``, or its gzip-compressed ``folder/name.gz`` (as MIMIC-CXR ships them).

    Raises MissingFileError (a FileNotFoundError) naming the expected file when neither exists.
    """
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise MissingFileError(f"label file {folder / name} (or {name}.gz) does not exist", paths=[folder / name])


def read_table(path: Path) -> Table:
    """The CSV at ``path`` (gzip-compressed if it ends in ``.gz``).

    Rows shorter than the header are padded with empty cells (a trailing empty column is
    common). Raises MissingFileError (a FileNotFoundError) naming a missing file, DataError
    naming a file without a header or with a row that has more (non-empty) cells than the
    header.
    """
    if not path.is_file():
        raise MissingFileError(f"label file {path} does not exist", paths=[path])
    raw = path.read_bytes()
    text = gzip.decompress(raw) if path.suffix == ".gz" else raw
    reader = csv.reader(io.StringIO(text.decode("utf-8-sig"), newline=""))
    header = next(reader, None)
    if header is None:
        raise DataError(f"label file {path} is empty", paths=[path])
    rows = []
    for number, row in enumerate(reader, start=2):
        if not row:
            continue
        if any(row[len(header) :]):
            raise DataError(f"{path} row {number} has more cells than the header", paths=[path])
        rows.append(row[: len(header)] + [""] * (len(header) - len(row)))
    return Table(path, tuple(header), rows)


def read_list(path: Path) -> list[str]:
    """The non-empty lines of a text file listing names, e.g. ChestX-ray14's ``test_list.txt``."""
    if not path.is_file():
        raise MissingFileError(f"list file {path} does not exist", paths=[path])
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]
