"""The comparison table over the grid: one row per (dataset, retriever, reranker, mode, split).

Every metric is the mean over the grid's seeds, with its sample standard deviation over seeds
beside it (``<metric>_std``, empty for one seed). Significance is tested on per-user NDCG@10
(averaged over seeds) by a paired randomization test, two comparisons per row:

* ``p_ndcg@10_vs_stage1``: a reranker row in retrieval mode against the Stage 1 row it reranks
  (same dataset, retriever and split); ``†`` marks a significant difference;
* ``p_ndcg@10_vs_best``: every row against the best row by NDCG@10 of its block (same dataset,
  mode and split); the best row's value gets ``*`` when it is significantly better than every
  other row of its block.

All p-values of the table are Holm-corrected together, so the marks hold at level ``ALPHA``
for the whole table (family-wise), however many cells the grid has.

Every row also names the pretrained models under it (``base_model``; ``text_model``, the
captioner or summariser of the item texts it shows) and whether any of them has random weights
(``random_weights``; ``‡`` beside the method in the Markdown table): such a row, like the demo's
LLM and VIP5 rows on tiny random-weight checkpoints, shows that the path runs, not what the
method achieves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from seqrerank.io import atomic_path, read_json, write_text
from seqrerank.metrics import METRIC_COLUMNS, per_user_metrics
from seqrerank.report.base_models import RANDOM_WEIGHTS_MARK
from seqrerank.significance import holm, paired_randomization_test

KEYS = ["dataset", "retriever", "reranker", "mode", "split"]
BLOCK = ["dataset", "mode", "split"]
"""Rows that compare with each other: ground-truth lists are far easier than retrieval."""
TESTED_METRIC = "ndcg@10"
ALPHA = 0.05
STD_SUFFIX = "_std"
P_VS_STAGE1 = f"p_{TESTED_METRIC}_vs_stage1"
P_VS_BEST = f"p_{TESTED_METRIC}_vs_best"
SIGNIFICANCE_COLUMN = f"{TESTED_METRIC}_sig"
BASE_MODEL, TEXT_MODEL, RANDOM_WEIGHTS = "base_model", "text_model", "random_weights"
FOOTNOTE = (
    f"Mean ± sample standard deviation over seeds. † {TESTED_METRIC} differs from the Stage 1 "
    f"row of the same retriever; * {TESTED_METRIC} is better than every other row of its "
    f"dataset, mode and split (paired randomization tests over users, Holm-corrected over the "
    f"table, p < {ALPHA}). Bold: the best value per metric, mode and split."
)
RANDOM_WEIGHTS_FOOTNOTE = (
    f"{RANDOM_WEIGHTS_MARK} random-weight base model (or captioner/summariser), such as the "
    "demo's tiny checkpoints: the row shows that the path runs, not what the method achieves "
    "with pretrained weights; do not compare its numbers with the other rows. The "
    f"`{BASE_MODEL}` and `{TEXT_MODEL}` columns of comparison.csv name each row's models."
)


def comparison_table(
    cells: list[dict],
    metrics_paths: list[str | Path],
    base_models: Mapping[str, Mapping[str, Any]] | None = None,
) -> pd.DataFrame:
    """Rows in grid order: the mean and standard deviation over seeds (``seeds`` counts them),
    the Holm-corrected p-values, the marks the Markdown table shows, and the models under each
    row from ``base_models`` (by method, :func:`seqrerank.report.base_models.base_models`)."""
    rows = []
    for cell, path in zip(cells, metrics_paths, strict=True):
        for split, values in read_json(path).items():
            rows.append({**cell, "split": split, **{m: values[m] for m in METRIC_COLUMNS}})
    frame = pd.DataFrame(rows)
    groups = frame.groupby(KEYS, sort=False)
    table = groups[list(METRIC_COLUMNS)].mean().reset_index()
    spread = groups[list(METRIC_COLUMNS)].std(ddof=1).to_numpy()  # NaN for one seed
    table[[m + STD_SUFFIX for m in METRIC_COLUMNS]] = spread
    table["seeds"] = groups["seed"].nunique().to_numpy()

    per_user = _per_user(cells, metrics_paths)
    blocks = table.groupby(BLOCK, sort=False)
    best_of_block = table.loc[blocks[TESTED_METRIC].transform("idxmax"), KEYS]
    keys = [tuple(row[KEYS]) for _, row in table.iterrows()]
    pairs = [
        *((key, _stage1_key(row)) for key, (_, row) in zip(keys, table.iterrows(), strict=True)),
        *(
            (key, tuple(best))
            for key, (_, best) in zip(keys, best_of_block.iterrows(), strict=True)
        ),
    ]
    tests = [(key, other) for key, other in pairs if other not in (None, key) and other in per_user]
    # A randomization test's smallest p-value is 1 / (permutations + 1), and Holm multiplies
    # the smallest by the number of tests: enough permutations that a clear difference can pass.
    permutations = max(10_000, math.ceil(2 * len(tests) / ALPHA))
    p_values = [
        _p_value(per_user, key, other, permutations) if (key, other) in tests else float("nan")
        for key, other in pairs
    ]
    corrected = holm(np.array(p_values, dtype=float))
    table[P_VS_STAGE1], table[P_VS_BEST] = np.split(corrected, 2)

    marks = table[P_VS_STAGE1].lt(ALPHA).map({True: "†", False: ""})
    for block, best in blocks[TESTED_METRIC].idxmax().items():
        others = table.loc[blocks.groups[block].drop(best), P_VS_BEST]
        if len(others) and (others < ALPHA).all():
            marks.at[best] += "*"
    table[SIGNIFICANCE_COLUMN] = marks
    _name_base_models(table, base_models or {})
    return table


def _name_base_models(table: pd.DataFrame, models: Mapping[str, Mapping[str, Any]]) -> None:
    """The models under each row: those of its retriever and of its reranker."""
    for column in (BASE_MODEL, TEXT_MODEL):
        table[column] = [
            "; ".join(
                name
                for method in (retriever, reranker)
                if (name := str(models.get(method, {}).get(column, "")))
            )
            for retriever, reranker in zip(table["retriever"], table["reranker"], strict=True)
        ]
    table[RANDOM_WEIGHTS] = [
        any(bool(models.get(method, {}).get(RANDOM_WEIGHTS)) for method in pair)
        for pair in zip(table["retriever"], table["reranker"], strict=True)
    ]


def marked_method(row: pd.Series, column: str) -> str:
    """The row's ``retriever`` or ``reranker`` with ``‡`` when the row rests on random weights
    (beside the reranker, or the retriever of a Stage 1 row)."""
    value = str(row[column])
    random = bool(row.get(RANDOM_WEIGHTS, False))
    marked = "reranker" if row["reranker"] != "none" else "retriever"
    return value + RANDOM_WEIGHTS_MARK if random and column == marked else value


def _stage1_key(row: pd.Series) -> tuple | None:
    if row["reranker"] == "none" or row["mode"] != "retrieval":
        return None
    return (row["dataset"], row["retriever"], "none", "retrieval", row["split"])


def _p_value(
    per_user: dict[tuple, pd.Series], key: tuple, other: tuple, permutations: int
) -> float:
    values, baseline = per_user[key].align(per_user[other], join="inner")
    return paired_randomization_test(values.to_numpy(), baseline.to_numpy(), permutations)


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


def to_markdown(table: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub/paper-ready Markdown table: mean ± std per metric (the mean alone for one
    seed), the best mean per metric, mode and split in bold, the significance marks on NDCG@10
    and the Holm-corrected p-values."""
    best = table.groupby(["mode", "split"])[list(METRIC_COLUMNS)].transform("max")
    columns = [*KEYS, *METRIC_COLUMNS, "seeds", P_VS_STAGE1, P_VS_BEST]
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
                if value == best.at[index, col]:
                    text = f"**{text}**"
                spread = row[col + STD_SUFFIX]
                cells.append(text if pd.isna(spread) else f"{text} ± {spread:.{digits}f}")
            elif col in (P_VS_STAGE1, P_VS_BEST):
                cells.append("" if pd.isna(value) else f"{value:.4f}")
            elif col in ("retriever", "reranker"):
                cells.append(marked_method(row, col))
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    footnotes = [FOOTNOTE]
    if RANDOM_WEIGHTS in table and table[RANDOM_WEIGHTS].astype(bool).any():
        footnotes.append(RANDOM_WEIGHTS_FOOTNOTE)
    return "\n".join(lines) + "\n\n" + "\n\n".join(footnotes) + "\n"


def write_comparison(
    cells: list[dict],
    metrics_paths: list[str | Path],
    csv_path: Path,
    markdown_path: Path,
    base_models: Mapping[str, Mapping[str, Any]] | None = None,
) -> pd.DataFrame:
    table = comparison_table(cells, metrics_paths, base_models)
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f")
    write_text(markdown_path, to_markdown(table))
    return table
