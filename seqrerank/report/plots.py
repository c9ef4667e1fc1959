"""The report's figures, drawn with matplotlib's object API (no pyplot state, no display)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from seqrerank.comparison import RANDOM_WEIGHTS
from seqrerank.io import atomic_path
from seqrerank.report.base_models import RANDOM_WEIGHTS_MARK

STAGE_COLORS = {"Stage 1": "#9ca3af", "Stage 2": "#2563eb", "ground truth": "#f59e0b"}


def save(figure: Figure, path: str | Path) -> None:
    """Write ``figure`` as SVG (its format follows ``path``), without a creation date so that
    an unchanged figure gives an unchanged file."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=Path(path).suffix[1:], metadata={"Date": None})


def cell_label(row: pd.Series) -> str:
    mark = RANDOM_WEIGHTS_MARK if is_random_weight(row) else ""
    if row["reranker"] == "none":
        return row["retriever"] + mark
    source = "ground truth" if row["mode"] == "ground_truth" else row["retriever"]
    return f"{source} → {row['reranker']}{mark}"


def is_random_weight(row: pd.Series) -> bool:
    """Whether the row rests on a random-weight base model (``random_weights`` of the table)."""
    return bool(row.get(RANDOM_WEIGHTS, False))


def cell_stage(row: pd.Series) -> str:
    if row["reranker"] == "none":
        return "Stage 1"
    return "ground truth" if row["mode"] == "ground_truth" else "Stage 2"


def metric_bars(table: pd.DataFrame, metric: str, split: str = "test") -> Figure:
    """One panel per dataset, one bar per cell, and the best Stage 1 retriever's value as a
    dashed reference line: a reranker earns its cost only above that line. A cell on a
    random-weight base model has a hatched bar and ``‡`` after its label."""
    rows = table[table["split"] == split]
    datasets = list(dict.fromkeys(rows["dataset"]))
    cells = max(rows.groupby("dataset").size())
    figure = Figure(figsize=(1.2 + 0.9 * cells, 3.2 * len(datasets)), layout="constrained")
    panels = figure.subplots(len(datasets), 1, squeeze=False)[:, 0]
    for axes, dataset in zip(panels, datasets, strict=True):
        part = rows[rows["dataset"] == dataset]
        labels = [cell_label(row) for _, row in part.iterrows()]
        colors = [STAGE_COLORS[cell_stage(row)] for _, row in part.iterrows()]
        hatches = ["//" if is_random_weight(row) else "" for _, row in part.iterrows()]
        bars = axes.bar(
            range(len(part)), part[metric], color=colors, hatch=hatches, edgecolor="white"
        )
        axes.bar_label(bars, fmt="%.4f", fontsize=8)
        handles = []
        if any(hatches):
            handles.append(
                Patch(
                    facecolor="#d1d5db",
                    edgecolor="white",
                    hatch="//",
                    label=f"{RANDOM_WEIGHTS_MARK} random-weight base model: "
                    "shows the path, not quality",
                )
            )
        stage1 = part[part["reranker"] == "none"]
        if len(stage1):
            baseline = stage1.loc[stage1[metric].idxmax()]
            axes.axhline(
                baseline[metric],
                color="#111827",
                linestyle="--",
                linewidth=1,
                label=f"Stage 1 baseline ({baseline['retriever']}): {baseline[metric]:.4f}",
            )
        if len(stage1) or handles:
            existing, _ = axes.get_legend_handles_labels()
            axes.legend(handles=[*existing, *handles], loc="upper left", fontsize=8, frameon=False)
        axes.set_xticks(range(len(part)), labels, rotation=20, ha="right", fontsize=8)
        axes.set_ylabel(f"{metric} ({split})")
        axes.set_ylim(0, max(1e-9, part[metric].max()) * 1.25)
        axes.set_title(dataset, fontsize=10)
        axes.spines[["top", "right"]].set_visible(False)
    return figure


def training_curves(history: list[dict], metric: str, title: str) -> Figure:
    """Training loss and validation ``metric`` per epoch, the best epoch (whose weights were
    kept) marked, and where early stopping ended the run."""
    figure = Figure(figsize=(8, 3), layout="constrained")
    loss_axes, metric_axes = figure.subplots(1, 2)
    epochs = [entry["epoch"] for entry in history]
    best_epoch = max((entry["epoch"] for entry in history if entry["best"]), default=None)
    loss_axes.plot(epochs, [entry["loss"] for entry in history], marker="o", markersize=3)
    loss_axes.set_ylabel("training loss")
    metric_axes.plot(epochs, [entry["val"][metric] for entry in history], marker="o", markersize=3)
    metric_axes.set_ylabel(f"validation {metric}")
    for axes in (loss_axes, metric_axes):
        if best_epoch is not None:
            axes.axvline(best_epoch, color="#059669", linestyle="--", linewidth=1)
        axes.set_xlabel("epoch")
        axes.spines[["top", "right"]].set_visible(False)
    if best_epoch is not None:
        best_value = history[epochs.index(best_epoch)]["val"][metric]
        metric_axes.annotate(
            f"best epoch {best_epoch}: {best_value:.4f}\n(stopped after epoch {epochs[-1]})",
            xy=(best_epoch, best_value),
            xytext=(0.98, 0.05),
            textcoords="axes fraction",
            ha="right",
            fontsize=8,
            color="#059669",
        )
    figure.suptitle(title, fontsize=10)
    return figure


def length_histogram(lengths: np.ndarray, title: str) -> Figure:
    """How many users have each sequence length (all of a user's items, val and test included)."""
    figure = Figure(figsize=(6, 3), layout="constrained")
    axes = figure.subplots()
    bins = np.arange(lengths.min(), min(lengths.max(), np.percentile(lengths, 99) * 2) + 2)
    axes.hist(np.minimum(lengths, bins[-1] - 1), bins=bins, color="#2563eb")
    axes.set_xlabel("items per user (the last bin holds all longer ones)")
    axes.set_ylabel("users")
    axes.set_title(title, fontsize=10)
    axes.spines[["top", "right"]].set_visible(False)
    return figure


def plot_training(history_path: str | Path, metric: str, title: str, figure_path: Path) -> None:
    """The training curves of a model's ``history.json``, saved to ``figure_path``."""
    save(training_curves(json.loads(Path(history_path).read_text()), metric, title), figure_path)
