"""Small HTML building blocks of the report: escaped tables (sortable by a click on a
column's header), embedded PNG images and the page around them."""

from __future__ import annotations

import html
from typing import Sequence

SORT_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach((th, column) => th.addEventListener("click", () => {
  const body = th.closest("table").tBodies[0];
  const key = row => { const cell = row.cells[column]; const v = cell.dataset.value;
    return v !== undefined && v !== "" ? parseFloat(v) : cell.textContent; };
  const ascending = th.dataset.order !== "ascending";
  th.dataset.order = ascending ? "ascending" : "descending";
  Array.from(body.rows).sort((a, b) => { const x = key(a), y = key(b);
    const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
    return ascending ? order : -order; }).forEach(row => body.appendChild(row));
}));
"""

STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; }
th { background: #eee; cursor: pointer; }
tr.differs td { background: #fff3c4; }
img { max-width: 100%; margin: 0.5em 0; }
"""


def cell(value: object) -> str:
    """A table cell: numbers shown to 4 decimals with the exact value in ``data-value``."""
    if value is None:
        return "<td></td>"
    if isinstance(value, float):
        return f'<td data-value="{value!r}">{value:.4f}</td>'
    if isinstance(value, int) and not isinstance(value, bool):
        return f'<td data-value="{value}">{value}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def table(header: Sequence[str], rows: Sequence[Sequence[object]], *, table_id: str, row_classes: Sequence[str] | None = None) -> str:
    """A sortable table; ``row_classes`` gives each row a CSS class (e.g. ``differs``)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    classes = row_classes or [""] * len(rows)
    body = "".join(
        f'<tr class="{html.escape(c)}">' + "".join(cell(v) for v in row) + "</tr>"
        for row, c in zip(rows, classes)
    )
    return f'<table class="sortable" id="{html.escape(table_id)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def image(base64_png: str, alt: str) -> str:
    """An embedded PNG."""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64_png}">'


def page(title: str, sections: Sequence[tuple[str, str]]) -> str:
    """A whole self-contained page: the title, then each (heading, HTML body) section."""
    parts = "".join(f"<section><h2>{html.escape(heading)}</h2>{body}</section>" for heading, body in sections)
    return (
        f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{parts}"
        f"<script>{SORT_SCRIPT}</script></body></html>"
    )


def paragraph(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def heading(text: str) -> str:
    """A run's heading inside a section (escaped: a folder name may hold ``<`` or ``&``)."""
    return f"<h3>{html.escape(text)}</h3>"
