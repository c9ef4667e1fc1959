"""The HTML pieces the report embeds: tables (sortable, best value marked) and small pages.

Snakemake's report shows each HTML result in a frame of its own, so every page is a complete
document with its style and script inline. A page's table also reads well when its file is
inlined into the report's front page, where scripts do not run: the style is scoped to the
``seqrerank`` class, and sorting is merely unavailable there.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from seqrerank.io import write_text

SIGNIFICANCE_SUFFIX = "_sig"
"""A column ``<metric>_sig`` (e.g. ``ndcg@10_sig``) holds significance marks such as ``*`` or
``†`` for ``<metric>``; the mark is shown beside the value, and the column itself is not."""

STYLE = """
.seqrerank { font-family: system-ui, sans-serif; font-size: 14px; color: #1f2937; }
.seqrerank table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
.seqrerank th, .seqrerank td { border-bottom: 1px solid #e5e7eb; padding: 0.3em 0.7em; }
.seqrerank th { background: #f3f4f6; text-align: left; white-space: nowrap; }
.seqrerank td.number { text-align: right; font-variant-numeric: tabular-nums; }
.seqrerank td.best { font-weight: bold; background: #ecfdf5; }
.seqrerank .mark { color: #b91c1c; }
.seqrerank .scroll { overflow-x: auto; max-width: 100%; }
.seqrerank pre { background: #f9fafb; padding: 0.7em; overflow-x: auto; font-size: 12px; }
.seqrerank table.sortable th { cursor: pointer; }
.seqrerank table.sortable th[data-order]::after { content: " \\2195"; color: #9ca3af; }
.seqrerank table.compact { font-size: 13px; }
.seqrerank table.compact th, .seqrerank table.compact td { padding: 0.2em 0.5em; }
.seqrerank p.note { font-size: 12px; color: #4b5563; max-width: 60em; margin: 0.3em 0; }
.seqrerank code::before, .seqrerank code::after { content: none; }
.seqrerank p.caveat { background: #fef3c7; border-left: 3px solid #d97706; padding: 0.4em 0.7em;
  max-width: 60em; margin: 0.5em 0; }
/* Snakemake's report shows its front page's text in a column 32rem wide beside the rule graph
   (Tailwind's prose max-w-lg), where a table shows one or two columns and scrolls, and centres
   it vertically, which cuts off the top of a page taller than the window: the column that
   holds this table takes the whole width, the graph moves below it, and the page starts at
   the top. */
.prose:has(.seqrerank) { max-width: none; }
.prose:has(.seqrerank) > p { max-width: 48rem; }
div.flex:has(> div > .prose .seqrerank) { flex-wrap: wrap; }
div.items-center:has(.prose .seqrerank) { align-items: flex-start; }
"""

# Click a header to sort by that column: numbers descending first (best first), text ascending.
SORT_SCRIPT = """
for (const table of document.querySelectorAll("table.sortable")) {
  table.querySelectorAll("thead th").forEach((header, column) => {
    header.dataset.order = "";
    header.addEventListener("click", () => {
      const rows = [...table.tBodies[0].rows];
      const key = (row) => {
        const text = row.cells[column].textContent.trim();
        const number = parseFloat(text);
        return isNaN(number) ? text : number;
      };
      const numeric = rows.every((row) => typeof key(row) === "number");
      const descending = header.dataset.order ? header.dataset.order === "ascending" : numeric;
      header.dataset.order = descending ? "descending" : "ascending";
      rows.sort((a, b) => (key(a) > key(b)) - (key(a) < key(b)));
      if (descending) rows.reverse();
      table.tBodies[0].append(...rows);
    });
  });
}
"""


def table(
    frame: pd.DataFrame,
    best: Iterable[str] = (),
    within: str | None = None,
    digits: int = 4,
    sortable: bool = True,
    compact: bool = False,
) -> str:
    """``frame`` as an HTML table: the maximum of every ``best`` column in bold (per group of
    ``within``, e.g. per split), floats rounded to ``digits``, significance marks attached;
    ``compact``: smaller type and padding (the report's front page)."""
    best = [column for column in best if column in frame.columns]
    marks = {
        column: frame[column + SIGNIFICANCE_SUFFIX].fillna("").astype(str)
        for column in best
        if column + SIGNIFICANCE_SUFFIX in frame.columns
    }
    shown = frame.drop(columns=[column + SIGNIFICANCE_SUFFIX for column in marks])
    groups = [shown.index] if within is None else shown.groupby(within).groups.values()
    is_best = pd.DataFrame(False, index=shown.index, columns=shown.columns)
    for rows in groups:
        for column in best:
            values = shown.loc[rows, column]
            is_best.loc[rows, column] = values == values.max()

    head = "".join(f"<th>{html.escape(str(column))}</th>" for column in shown.columns)
    body = []
    for index, row in shown.iterrows():
        cells = []
        for column, value in row.items():
            classes, text = [], html.escape(_format(value, digits))
            if pd.api.types.is_number(value):
                classes.append("number")
            if is_best.at[index, column]:
                classes.append("best")
            if column in marks and marks[column][index]:
                text += f'<sup class="mark">{html.escape(marks[column][index])}</sup>'
            class_attribute = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{class_attribute}>{text}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    classes = [name for name, chosen in (("sortable", sortable), ("compact", compact)) if chosen]
    table_class = f' class="{" ".join(classes)}"' if classes else ""
    return (
        f'<div class="scroll"><table{table_class}><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _format(value, digits: int) -> str:
    if isinstance(value, float):
        return "" if pd.isna(value) else f"{value:.{digits}f}"
    return str(value)


def key_values(pairs: dict) -> str:
    """A two-column table of names and values (values already HTML, or plain text)."""
    rows = "".join(
        f"<tr><th>{html.escape(str(name))}</th><td>{value}</td></tr>"
        for name, value in pairs.items()
    )
    return f"<table>{rows}</table>"


def section(title: str, *parts: str) -> str:
    return f"<h2>{html.escape(title)}</h2>" + "".join(parts)


def code(text: str) -> str:
    return f"<pre>{html.escape(text)}</pre>"


def write_page(path: str | Path, title: str, *parts: str) -> None:
    """A self-contained HTML document: the given parts, the style, and the sort script."""
    write_text(
        path,
        "<!doctype html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head>\n"
        f'<body class="seqrerank"><h1>{html.escape(title)}</h1>\n'
        + "\n".join(parts)
        + f"\n<script>{SORT_SCRIPT}</script></body></html>\n",
    )


def write_fragment(path: str | Path, *parts: str) -> None:
    """Markup to inline into another page (the report's front page): style and parts only."""
    write_text(path, f'<style>{STYLE}</style><div class="seqrerank">{"".join(parts)}</div>\n')
