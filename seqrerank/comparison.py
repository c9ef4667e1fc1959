"""The comparison table over the grid: one row per (dataset, retriever, reranker, mode, split).

Each reranker row in retrieval mode carries the p-value of its per-user NDCG@10 difference from
the Stage 1 row it reranks (same dataset, retriever and split), by a paired randomization test.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from seqrerank.io import atomic_path, read_json, write_text
from seqrerank.metrics import METRIC_COLUMNS, per_user_metrics
from seqrerank.significance import paired_randomization_test

KEYS = ["dataset", "retriever", "reranker", "mode", "split"]
TESTED_METRIC = "ndcg@10"
ALPHA = 0.05
P_COLUMN = f"p_{TESTED_METRIC}_vs_stage1"
SIGNIFICANCE_COLUMN = f"{TESTED_METRIC}_sig"


def comparison_table(cells: list[dict], metrics_paths: list[str | Path]) -> pd.DataFrame:
    """Rows in grid order; with several seeds, the mean over seeds (``seeds`` counts them)."""
    rows = []
    for cell, path in zip(cells, metrics_paths, strict=True):
        for split, values in read_json(path).items():
            rows.append({**cell, "split": split, **{m: values[m] for m in METRIC_COLUMNS}})
    frame = pd.DataFrame(rows)
    table = frame.groupby(KEYS, sort=False)[list(METRIC_COLUMNS)].mean().reset_index()
    table["seeds"] = frame.groupby(KEYS, sort=False)["seed"].nunique().to_numpy()
    p_values = pd.Series(_p_values_vs_stage1(table, cells, metrics_paths))
    table[P_COLUMN] = p_values
    # The mark the Markdown table and the HTML report show beside the tested metric.
    table[SIGNIFICANCE_COLUMN] = p_values.lt(ALPHA).map({True: "†", False: ""})
    return table


def _per_user(cells: list[dict], metrics_paths: list[str | Path]) -> dict[tuple, pd.Series]:
    """Per-user values of the tested metric for each row key, averaged over seeds, read from the
    ``ranks.csv`` written beside every cell's metrics."""
    frames: dict[tuple, list[pd.Series]] = {}
    for cell, path in zip(cells, metrics_paths, strict=True):
        ranks = pd.read_csv(Path(path).with_name("ranks.csv"))
        for split, part in ranks.groupby("split"):
            values = per_user_metrics(part["rank"].to_numpy())[TESTED_METRIC]
            key = tuple({**cell, "split": split}[k] for k in KEYS)
            frames.setdefault(key, []).append(pd.Series(values, index=part["user"].to_numpy()))
    return {key: pd.concat(series, axis=1).mean(axis=1) for key, series in frames.items()}


def _p_values_vs_stage1(
    table: pd.DataFrame, cells: list[dict], metrics_paths: list[str | Path]
) -> list[float]:
    per_user = _per_user(cells, metrics_paths)
    p_values = []
    for row in table.itertuples(index=False):
        key = tuple(getattr(row, k) for k in KEYS)
        stage1 = (row.dataset, row.retriever, "none", "retrieval", row.split)
        if row.reranker == "none" or row.mode != "retrieval" or stage1 not in per_user:
            p_values.append(float("nan"))
            continue
        reranked, baseline = per_user[key].align(per_user[stage1], join="inner")
        p_values.append(paired_randomization_test(reranked.to_numpy(), baseline.to_numpy()))
    return p_values


def to_markdown(table: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub/paper-ready Markdown table: the best value per metric, mode and split in bold, and a
    dagger on NDCG@10 where a reranker differs significantly from its Stage 1 row."""
    # Ground-truth lists are much easier than retrieval: compare rows within a mode.
    best = table.groupby(["mode", "split"])[list(METRIC_COLUMNS)].transform("max")
    columns = [col for col in table.columns if col != SIGNIFICANCE_COLUMN]
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" if col in KEYS else "---:" for col in columns) + "|",
    ]
    for index, row in table.iterrows():
        cells = []
        for col in columns:
            value = row[col]
            if col in METRIC_COLUMNS:
                text = f"{value:.{digits}f}"
                if col == TESTED_METRIC:
                    text += row[SIGNIFICANCE_COLUMN]
                cells.append(f"**{text}**" if value == best.at[index, col] else text)
            elif col == P_COLUMN:
                cells.append("" if pd.isna(value) else f"{value:.4f}")
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    note = (
        f"\n† {TESTED_METRIC} differs from the Stage 1 row of the same retriever "
        f"(paired randomization test over users, p < {ALPHA}).\n"
    )
    return "\n".join(lines) + "\n" + note


def write_comparison(
    cells: list[dict], metrics_paths: list[str | Path], csv_path: Path, markdown_path: Path
) -> pd.DataFrame:
    table = comparison_table(cells, metrics_paths)
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f")
    write_text(markdown_path, to_markdown(table))
    return table
