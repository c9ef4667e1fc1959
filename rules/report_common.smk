# Paths and input functions of the report rules (rules/report.smk): which files the report
# shows, and the report() entry (category, labels, caption) of each.
REPORT = f"results/{RUN}/report"
REPORT_METRICS = config["report"]["metrics"]
STAGES = {"Stage 1": "Stage 1: retrieval", "Stage 2": "Stage 2: reranking"}


def cell_models(dataset, retriever, reranker, mode, seed, **_):
    """The model files a cell's ranking comes from, by stage."""
    models = {}
    if retriever != "none":
        models["Stage 1"] = f"{RETRIEVAL}/model.pt".format(
            dataset=dataset, retriever=retriever, seed=seed
        )
    if reranker != "none":
        source = training_source(reranker, mode, retriever)
        models["Stage 2"] = f"{RERANK_MODEL}/model.pt".format(
            dataset=dataset, reranker=reranker, source=source, seed=seed
        )
    return models


def history_of(model):
    return model.replace("model.pt", "history.json")


def report_cells():
    """Every cell with its models and the report() entry of its page."""
    cells = []
    for cell in grid_cells():
        stage = "Stage 1" if cell["reranker"] == "none" else "Stage 2"
        page = "{dataset}/cells/{retriever}/{reranker}/{mode}/seed{seed}.html".format(**cell)
        labels = {key: str(cell[key]) for key in ("retriever", "reranker", "mode", "seed")}
        cells.append(
            {
                **cell,
                "models": cell_models(**cell),
                "page": report(
                    f"{REPORT}/{page}",
                    caption="../report/cell.rst",
                    category=cell["dataset"],
                    subcategory=STAGES[stage],
                    labels={"result": "cell", **labels},
                ),
            }
        )
    return cells


def trained_models():
    """Every model that trains (popularity does not), with the report() entry of its curves."""
    models = {}
    for cell in grid_cells():
        dataset, seed = cell["dataset"], cell["seed"]
        if cell["reranker"] == "none":
            stage, method, source = "Stage 1", cell["retriever"], None
            name = f"retrieval_{method}_seed{seed}"
        else:
            stage, method = "Stage 2", cell["reranker"]
            source = training_source(method, cell["mode"], cell["retriever"])
            name = f"rerank_{method}_trained_on_{source}_seed{seed}"
        model = cell_models(**cell)[stage]
        if model in models or method_spec(method).trains_on == "nothing":
            continue
        labels = {"result": "training curves", "method": method, "seed": str(seed)}
        if source:
            labels["trained on"] = source
        settings_of = "retrieval" if stage == "Stage 1" else "rerank"
        models[model] = {
            "history": history_of(model),
            "metric": training_settings(config, settings_of, method)["metric"],
            "title": f"{method} ({STAGES[stage]}"
            + (f", trained on {source}" if source else "")
            + f") on {dataset}, seed {seed}",
            "figure": report(
                f"{REPORT}/{dataset}/training/{name}.svg",
                caption="../report/training.rst",
                category=dataset,
                subcategory=STAGES[stage],
                labels=labels,
            ),
        }
    return list(models.values())


def grid_benchmarks():
    """The benchmark file of every job of the grid, from the rules' own `benchmark:` paths."""
    jobs = [(rules.aggregate, {})]
    for dataset in DATASETS:
        jobs.append((rules.prepare_data, {"dataset": dataset}))
        for filename in config["datasets"][dataset].get("download", {}):
            jobs.append((rules.download_raw, {"dataset": dataset, "filename": filename}))
    for cell in grid_cells():
        method = cell["retriever"] if cell["reranker"] == "none" else cell["reranker"]
        for modality in dataset_modalities(cell["dataset"]):
            if modality in method_spec(method).features:
                jobs.append((rules.item_features, {**cell, "feature": modality}))
        for column in method_spec(method).item_texts:  # the generated item texts it reads
            if column == "caption":
                jobs.append((rules.caption_items, cell))
            else:
                small = column.removeprefix("semantic_summary")
                jobs.append((rules.summarise_items, {**cell, "small": small}))
        if cell["reranker"] == "none":
            jobs.append((rules.train_retriever, cell))
            continue
        source = training_source(cell["reranker"], cell["mode"], cell["retriever"])
        jobs.append((rules.train_reranker, {**cell, "source": source}))
        jobs.append((rules.rerank, cell))
        if "ground_truth" in (cell["mode"], source):
            jobs.append((rules.ground_truth_candidates, cell))
    files = [expand(rule.benchmark, **wildcards, allow_missing=True)[0] for rule, wildcards in jobs]
    return list(dict.fromkeys(files))


def report_files():
    """Everything the report shows; `rule all` asks for it so that the report is complete."""
    return [
        *rules.report_comparison.output,
        *expand(rules.report_dataset.output, dataset=DATASETS),
        *rules.plot_training.output,
        *rules.report_cells.output,
        *rules.report_benchmarks.output,
        *rules.report_provenance.output,
    ]
