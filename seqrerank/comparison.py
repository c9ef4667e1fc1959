"""The comparison table over the grid: one row per (dataset, retriever, reranker, mode, split)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from seqrerank.io import atomic_path, read_json, write_text
from seqrerank.metrics import METRIC_COLUMNS

KEYS = ["dataset", "retriever", "reranker", "mode", "split"]


def comparison_table(cells: list[dict], metrics_paths: list[str | Path]) -> pd.DataFrame:
    """Rows in grid order; with several seeds, the mean over seeds (``seeds`` counts them)."""
    rows = []
    for cell, path in zip(cells, metrics_paths, strict=True):
        for split, values in read_json(path).items():
            rows.append({**cell, "split": split, **{m: values[m] for m in METRIC_COLUMNS}})
    frame = pd.DataFrame(rows)
    table = frame.groupby(KEYS, sort=False)[list(METRIC_COLUMNS)].mean().reset_index()
    table["seeds"] = frame.groupby(KEYS, sort=False)["seed"].nunique().to_numpy()
    return table


def to_markdown(table: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub/paper-ready Markdown table with the best value per metric and split in bold."""
    columns = list(table.columns)
    best = {
        (split, col): part[col].max()
        for split, part in table.groupby("split")
        for col in METRIC_COLUMNS
    }
    lines = [
        "| " + " | ".join(columns) + " |",
        "|"
        + "|".join("---:" if col in METRIC_COLUMNS or col == "seeds" else "---" for col in columns)
        + "|",
    ]
    for _, row in table.iterrows():
        cells = []
        for col in columns:
            value = row[col]
            if col in METRIC_COLUMNS:
                text = f"{value:.{digits}f}"
                cells.append(f"**{text}**" if value == best[(row["split"], col)] else text)
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_comparison(
    cells: list[dict], metrics_paths: list[str | Path], csv_path: Path, markdown_path: Path
) -> pd.DataFrame:
    table = comparison_table(cells, metrics_paths)
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f")
    write_text(markdown_path, to_markdown(table))
    return table
