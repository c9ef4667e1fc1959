"""The report's results, one function per workflow rule: read the run's files, write a page or a
figure. ``snakemake --report`` then gathers them, with their captions, into one HTML file."""

from __future__ import annotations

import datetime
import html as markup
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from seqrerank.comparison import (
    BASE_MODEL,
    FOOTNOTE,
    RANDOM_WEIGHTS,
    RANDOM_WEIGHTS_FOOTNOTE,
    TEXT_MODEL,
    marked_method,
)
from seqrerank.data.dataset import DatasetFiles, as_dataset_files, load_sequences
from seqrerank.io import read_json
from seqrerank.metrics import METRIC_COLUMNS
from seqrerank.report import html, plots
from seqrerank.report.html import SIGNIFICANCE_SUFFIX
from seqrerank.report.provenance import KEY_PACKAGES, file_digest, git_commit, package_versions

CELL_KEYS = ["dataset", "retriever", "reranker", "mode"]


def write_comparison_pages(
    comparison_csv: Path,
    metrics: Sequence[str],
    page_path: Path,
    summary_path: Path,
    chart_paths: Sequence[Path],
) -> None:
    """The whole comparison table (sortable, the best value per dataset, split and mode in
    bold), the test rows of ``metrics`` for the report's front page, and a bar chart of each
    of ``metrics`` (to the matching path of ``chart_paths``). A method whose base model has
    random weights carries ``‡``, explained above both tables."""
    table = pd.read_csv(comparison_csv, keep_default_na=False, na_values=[""])
    for column in (BASE_MODEL, TEXT_MODEL):
        if column in table:
            table[column] = table[column].fillna("")
    shown = table.copy()
    for column in ("retriever", "reranker"):
        shown[column] = [marked_method(row, column) for _, row in table.iterrows()]
    # What ‡ means goes above each table, where a reader starts; the marks' meaning below.
    caveat, notes = random_weights_note(table), note(FOOTNOTE)
    # Ground-truth cells rank 20 candidates: their numbers only compare among themselves.
    html.write_page(
        page_path,
        "Comparison table",
        caveat,
        html.table(shown, best=METRIC_COLUMNS, within=["dataset", "split", "mode"]),
        notes,
    )
    marks = [m + SIGNIFICANCE_SUFFIX for m in metrics if m + SIGNIFICANCE_SUFFIX in table]
    test = shown.loc[table["split"] == "test", [*CELL_KEYS, *metrics, *marks]]
    front = html.table(test, best=metrics, within=["dataset", "mode"], sortable=False, compact=True)
    html.write_fragment(summary_path, caveat, front, notes)
    for metric, path in zip(metrics, chart_paths, strict=True):
        plots.save(plots.metric_bars(table, metric), path)


def random_weights_note(table: pd.DataFrame) -> str:
    """The note on rows whose base model has random weights, if the table has any."""
    if RANDOM_WEIGHTS in table and table[RANDOM_WEIGHTS].astype(bool).any():
        return note(RANDOM_WEIGHTS_FOOTNOTE, "caveat")
    return ""


def note(text: str, kind: str = "note") -> str:
    return f'<p class="{kind}">{_code_spans(markup.escape(text))}</p>'


def _code_spans(text: str) -> str:
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def write_dataset(
    dataset: DatasetFiles | Path, name: str, page_path: Path, histogram_path: Path
) -> None:
    """Counts, the interactions, users and items each filter removed, and the histogram of
    sequence lengths of a prepared dataset."""
    dataset = as_dataset_files(dataset)
    stats = read_json(dataset.stats)
    filters = pd.DataFrame(stats["filters"])
    for column in ("users", "items", "interactions"):
        filters[f"{column} dropped"] = (-filters[column].diff()).fillna(0).astype(int)
    lengths = np.array([len(seq) for seq in load_sequences(dataset).full_sequences()])
    counts = {key: value for key, value in stats.items() if key != "filters"}
    counts["sequence length (min / median / max)"] = (
        f"{lengths.min()} / {np.median(lengths):g} / {lengths.max()}"
    )
    html.write_page(
        page_path,
        f"Dataset {name}",
        html.section("Counts", html.key_values(counts)),
        html.section("After each filter", html.table(filters, sortable=False)),
    )
    plots.save(plots.length_histogram(lengths, f"{name}: items per user"), histogram_path)


def write_cell(cell: dict, metrics_path: Path, models: dict[str, Path], page_path: Path) -> None:
    """One cell's view: its metrics over all users and over the users whose target is in the
    list, how often the target is in the list at all, and the models it used."""
    rows, coverage = [], []
    for split, values in read_json(metrics_path).items():
        for users, metrics in (("all", values), ("target in list", values["conditional"])):
            rows.append({"split": split, "users": users, **{m: metrics[m] for m in METRIC_COLUMNS}})
        coverage.append(
            {
                "split": split,
                "users": values["users"],
                "target in list": values["target_in_list"],
                "share": values["target_in_list"] / values["users"],
            }
        )
    model_rows = []
    for stage, path in models.items():
        history = read_json(Path(path).with_name("history.json"))
        best = [entry for entry in history if entry["best"]]
        model_rows.append(
            {
                "stage": stage,
                "model file": str(path),
                "sha256": file_digest(path),
                "epochs trained": len(history),
                "best epoch": best[-1]["epoch"] if best else "(not trained)",
            }
        )
    title = f"{plots.cell_label(cell)} ({cell['mode']}) on {cell['dataset']}, seed {cell['seed']}"
    html.write_page(
        page_path,
        title,
        html.section("Metrics", html.table(pd.DataFrame(rows), sortable=False)),
        html.section("Target in the list", html.table(pd.DataFrame(coverage), sortable=False)),
        html.section("Models", html.table(pd.DataFrame(model_rows), sortable=False)),
    )


def write_benchmarks(folders: Sequence[Path], page_path: Path) -> None:
    """Wall time, CPU time and peak memory of every job, from the ``benchmark:`` files the run
    wrote (``results/<dataset or run>/benchmarks/<job>.tsv``, in ``folders``)."""
    rows = []
    for path in sorted(p for folder in map(Path, folders) for p in folder.glob("*.tsv")):
        measured = pd.read_csv(path, sep="\t").iloc[-1]
        rows.append(
            {
                "results": path.parent.parent.name,
                "job": path.stem,
                "seconds": float(measured["s"]),
                "cpu seconds": pd.to_numeric(measured["cpu_time"], errors="coerce"),
                "peak RSS (MB)": pd.to_numeric(measured["max_rss"], errors="coerce"),
            }
        )
    table = pd.DataFrame(rows)
    total = {"jobs": len(table), "wall seconds, summed": f"{table['seconds'].sum():.1f}"}
    html.write_page(
        page_path,
        "Runtime and memory of every job",
        html.key_values(total),
        html.table(table, digits=1),
    )


def write_provenance(
    config: dict,
    cells: Sequence[dict],
    methods: dict[str, dict],
    workflow_dir: Path,
    page_path: Path,
) -> None:
    """What produced the tables: the commit, the packages, the effective config (defaults
    filled in), each method's model parameters (a pretrained model's id among them) and
    training settings, and every cell's model files with their digests."""
    models = pd.DataFrame(
        [
            {
                **{key: cell[key] for key in [*CELL_KEYS, "seed"]},
                **{
                    f"{stage} model": f"{path} (sha256 {file_digest(path)})"
                    for stage, path in cell["models"].items()
                },
            }
            for cell in cells
        ]
    )
    versions = package_versions()
    key_versions = {name: versions[name] for name in ("python", *KEY_PACKAGES)}
    all_versions = "\n".join(f"{name}=={version}" for name, version in versions.items())
    html.write_page(
        page_path,
        f"Provenance of run {config['run']}",
        html.key_values(
            {
                "git commit": markup.escape(git_commit(workflow_dir)),
                "seeds": ", ".join(map(str, config["seeds"])),
                "written": datetime.datetime.now().isoformat(timespec="seconds"),
            }
        ),
        html.section("Models of every cell", html.table(models, sortable=True)),
        html.section(
            "Model parameters and training settings of each method",
            html.code(yaml.safe_dump(methods, sort_keys=False)),
        ),
        html.section(
            "Packages",
            html.key_values(key_versions),
            f"<details><summary>all installed packages</summary>{html.code(all_versions)}"
            "</details>",
        ),
        html.section("Configuration", html.code(yaml.safe_dump(config, sort_keys=False))),
    )
