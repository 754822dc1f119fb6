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
body { font-family: sans-serif; margin: 1em auto; padding: 0 1em; max-width: 70em; color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; margin-top: 1.6em; }
.wide { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; }
th { background: #eee; cursor: pointer; }
tr.differs td { background: #fff3c4; }
img { max-width: 100%; height: auto; margin: 0.5em 0; }
p.answer { font-size: 1.15em; background: #eef5ff; border-left: 4px solid #1f6feb; padding: 0.6em 0.8em; }
p.method { font-size: 0.85em; color: #555; }
"""


class PValue(float):
    """A p-value in a table: shown with two significant digits below 0.01 (``0.001``),
    else three decimals; never as 0.0000 (a bootstrap p-value is never 0)."""


def format_p(value: float) -> str:
    """``value`` as :class:`PValue` shows it (``n/a`` for NaN)."""
    if value != value:
        return "n/a"
    return f"{value:.2g}" if value < 0.01 else f"{value:.3f}"


def cell(value: object) -> str:
    """A table cell: numbers shown to 4 decimals with the exact value in ``data-value``."""
    if value is None:
        return "<td></td>"
    if isinstance(value, PValue):
        return f'<td data-value="{float(value)!r}">{format_p(value)}</td>'
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
    return f'<div class="wide"><table class="sortable" id="{html.escape(table_id)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def image(base64_png: str, alt: str) -> str:
    """An embedded PNG."""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64_png}">'


def page(title: str, sections: Sequence[tuple[str, str]], *, intro: str = "") -> str:
    """A whole self-contained page: the title, ``intro`` (HTML), then each (heading, HTML
    body) section."""
    parts = "".join(f"<section><h2>{html.escape(heading)}</h2>{body}</section>" for heading, body in sections)
    return (
        f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{intro}{parts}"
        f"<script>{SORT_SCRIPT}</script></body></html>"
    )


def paragraph(text: str, css_class: str = "") -> str:
    """An escaped paragraph, of the CSS class ``css_class`` if given."""
    attribute = f' class="{html.escape(css_class)}"' if css_class else ""
    return f"<p{attribute}>{html.escape(text)}</p>"


def heading(text: str) -> str:
    """A run's heading inside a section (escaped: a folder name may hold ``<`` or ``&``)."""
    return f"<h3>{html.escape(text)}</h3>"
