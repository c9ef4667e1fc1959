"""What the HTML report shows of a grid, as plain data: each cell's page and each trained
model's training curves, with the entry (caption, category, labels) Snakemake's ``report()``
files them under. The report rules wrap each entry in ``report()``."""

from __future__ import annotations

from typing import Any

from seqrerank.grid import Grid

STAGES = {"retrieval": "Stage 1", "rerank": "Stage 2"}
SUBCATEGORIES = {"retrieval": "Stage 1: retrieval", "rerank": "Stage 2: reranking"}


def cell_pages(grid: Grid, report_dir: str) -> list[dict[str, Any]]:
    """Every cell with its metrics file, the model files its ranking comes from (by stage) and
    the report entry of its page (``entry``)."""
    pages = []
    for cell in grid.cells():
        stage = "retrieval" if cell.reranker == "none" else "rerank"
        keys = cell.keys()
        page = "{dataset}/cells/{retriever}/{reranker}/{mode}/seed{seed}.html".format(**keys)
        labels = {key: str(keys[key]) for key in ("retriever", "reranker", "mode", "seed")}
        models = grid.cell_models(cell)
        pages.append(
            {
                **keys,
                "metrics": cell.metrics,
                "models": {STAGES[s]: model.model for s, model in models.items()},
                "entry": {
                    "path": f"{report_dir}/{page}",
                    "caption": "../report/cell.rst",
                    "category": cell.dataset,
                    "subcategory": SUBCATEGORIES[stage],
                    "labels": {"result": "cell", **labels},
                },
            }
        )
    return pages


def training_figures(grid: Grid, report_dir: str) -> list[dict[str, Any]]:
    """Every trained model with its history, validation metric, title and the report entry of
    its training curves (``entry``)."""
    figures = []
    for model in grid.trained_models():
        trained_on = f", trained on {model.source}" if model.source else ""
        name = f"{model.stage}_{model.method}"
        labels = {"result": "training curves", "method": model.method, "seed": str(model.seed)}
        if model.source:
            name += f"_trained_on_{model.source}"
            labels["trained on"] = model.source
        figures.append(
            {
                "history": model.history,
                "metric": grid.training_settings(model.stage, model.method)["metric"],
                "title": f"{model.method} ({SUBCATEGORIES[model.stage]}{trained_on}) on "
                f"{model.dataset}, seed {model.seed}",
                "entry": {
                    "path": f"{report_dir}/{model.dataset}/training/{name}_seed{model.seed}.svg",
                    "caption": "../report/training.rst",
                    "category": model.dataset,
                    "subcategory": SUBCATEGORIES[model.stage],
                    "labels": labels,
                },
            }
        )
    return figures
