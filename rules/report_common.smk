# What the report rules (rules/report.smk) show, from the grid (seqrerank.grid): the report()
# entry (category, labels, caption) of every page and figure.
REPORT = f"results/{RUN}/report"
REPORT_METRICS = config["report"]["metrics"]
STAGES = {"retrieval": "Stage 1", "rerank": "Stage 2"}
SUBCATEGORIES = {"retrieval": "Stage 1: retrieval", "rerank": "Stage 2: reranking"}


def cell_pages():
    """Every cell with the model files its ranking comes from and the report() entry of its
    page."""
    pages = []
    for cell in GRID.cells():
        stage = "retrieval" if cell.reranker == "none" else "rerank"
        keys = cell.keys()
        page = "{dataset}/cells/{retriever}/{reranker}/{mode}/seed{seed}.html".format(**keys)
        labels = {key: str(keys[key]) for key in ("retriever", "reranker", "mode", "seed")}
        models = GRID.cell_models(cell)
        pages.append(
            {
                **keys,
                "metrics": cell.metrics,
                "models": {STAGES[s]: model.model for s, model in models.items()},
                "page": report(
                    f"{REPORT}/{page}",
                    caption="../report/cell.rst",
                    category=cell.dataset,
                    subcategory=SUBCATEGORIES[stage],
                    labels={"result": "cell", **labels},
                ),
            }
        )
    return pages


def training_figures():
    """Every trained model with the report() entry of its training curves."""
    figures = []
    for model in GRID.trained_models():
        trained_on = f", trained on {model.source}" if model.source else ""
        name = f"{model.stage}_{model.method}"
        if model.source:
            name += f"_trained_on_{model.source}"
        labels = {"result": "training curves", "method": model.method, "seed": str(model.seed)}
        if model.source:
            labels["trained on"] = model.source
        figures.append(
            {
                "history": model.history,
                "metric": GRID.training_settings(model.stage, model.method)["metric"],
                "title": f"{model.method} ({SUBCATEGORIES[model.stage]}{trained_on}) on "
                f"{model.dataset}, seed {model.seed}",
                "figure": report(
                    f"{REPORT}/{model.dataset}/training/{name}_seed{model.seed}.svg",
                    caption="../report/training.rst",
                    category=model.dataset,
                    subcategory=SUBCATEGORIES[model.stage],
                    labels=labels,
                ),
            }
        )
    return figures


def report_files():
    """Everything the report shows; `rule all` asks for it so that the report is complete."""
    return [
        *rules.report_comparison.output,
        *expand(rules.report_dataset.output, dataset=GRID.datasets),
        *rules.plot_training.output,
        *rules.report_cells.output,
        *rules.report_benchmarks.output,
        *rules.report_provenance.output,
    ]
