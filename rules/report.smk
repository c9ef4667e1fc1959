# The results the HTML report gathers: `snakemake --report results/<run>/report.html` embeds
# every output flagged with report() below, with its caption from report/*.rst. Categories: the
# comparison, the run (runtimes, provenance), and one per dataset with subcategories per stage.
# Like every rule, each takes its resources (and the user's SLURM account) from resources_of.
include: "report_common.smk"


rule report_comparison:
    """The sortable comparison table, its test rows for the report's front page, and one bar
    chart per metric in `report.metrics`: every cell against the Stage 1 baseline."""
    input:
        f"results/{RUN}/comparison.csv",
    output:
        page=report(
            f"{REPORT}/comparison.html",
            caption="../report/comparison.rst",
            category="Comparison",
            labels={"result": "table", "metric": "all"},
        ),
        summary=f"{REPORT}/summary.html",
        charts=[
            report(
                f"{REPORT}/metric_{metric}.svg",
                caption="../report/metric.rst",
                category="Comparison",
                labels={"result": "bar chart", "metric": metric},
            )
            for metric in REPORT_METRICS
        ],
    log:
        f"results/{RUN}/logs/report_comparison.log",
    conda:
        conda_env("report")
    containerized:
        container_image("report")
    threads: threads_of("report_comparison")
    resources:
        **resources_of("report_comparison", mem_mb=1000, runtime=10),
    params:
        metrics=REPORT_METRICS,
    script:
        "../workflow_scripts/report_comparison.py"


rule report_dataset:
    """Counts, what each filter dropped, and the sequence-length histogram of a dataset."""
    input:
        **data_files("{dataset}"),
    output:
        page=report(
            f"{REPORT}/{{dataset}}/data.html",
            caption="../report/dataset.rst",
            category="{dataset}",
            subcategory="Data",
            labels={"result": "statistics"},
        ),
        histogram=report(
            f"{REPORT}/{{dataset}}/sequence_lengths.svg",
            caption="../report/sequence_lengths.rst",
            category="{dataset}",
            subcategory="Data",
            labels={"result": "sequence lengths"},
        ),
    log:
        f"{LOGS}/report_dataset.log",
    conda:
        conda_env("report")
    containerized:
        container_image("report")
    threads: threads_of("report_dataset")
    resources:
        **resources_of("report_dataset", mem_mb=1000, runtime=10),
    script:
        "../workflow_scripts/report_dataset.py"


rule plot_training:
    """Loss and validation metric per epoch of every trained model, the best epoch marked."""
    input:
        [figure["history"] for figure in TRAINING_FIGURES],
    output:
        [reported(figure["entry"]) for figure in TRAINING_FIGURES],
    log:
        f"results/{RUN}/logs/plot_training.log",
    conda:
        conda_env("report")
    containerized:
        container_image("report")
    threads: threads_of("plot_training")
    resources:
        **resources_of("plot_training", mem_mb=1000, runtime=10),
    params:
        metrics=[figure["metric"] for figure in TRAINING_FIGURES],
        titles=[figure["title"] for figure in TRAINING_FIGURES],
    script:
        "../workflow_scripts/plot_training.py"


rule report_cells:
    """One page per cell: its metrics, how often the target is in its list, its models."""
    input:
        metrics=[cell.metrics for cell in GRID.cells()],
        models=[model.model for model in GRID.models()],
        histories=[model.history for model in GRID.models()],
    output:
        [reported(cell["entry"]) for cell in CELL_PAGES],
    log:
        f"results/{RUN}/logs/report_cells.log",
    conda:
        conda_env("report")
    containerized:
        container_image("report")
    threads: threads_of("report_cells")
    resources:
        **resources_of("report_cells", mem_mb=1000, runtime=10),
    params:
        cells=[{k: v for k, v in cell.items() if k != "entry"} for cell in CELL_PAGES],
    script:
        "../workflow_scripts/report_cells.py"


rule report_benchmarks:
    """Runtime and peak memory of every job, from the benchmark files the run wrote."""
    input:
        # Written when every job of the grid has run: their benchmark files are all there.
        f"results/{RUN}/comparison.csv",
    output:
        report(
            f"{REPORT}/benchmarks.html",
            caption="../report/benchmarks.rst",
            category="Run",
            labels={"result": "runtime and memory"},
        ),
    log:
        f"results/{RUN}/logs/report_benchmarks.log",
    conda:
        conda_env("report")
    containerized:
        container_image("report")
    threads: threads_of("report_benchmarks")
    resources:
        **resources_of("report_benchmarks", mem_mb=1000, runtime=10),
    params:
        folders=[
            *(BENCHMARKS.format(dataset=dataset) for dataset in GRID.datasets),
            f"results/{RUN}/benchmarks",
        ],
    script:
        "../workflow_scripts/report_benchmarks.py"


rule report_provenance:
    """The commit, packages, config, seeds and model files behind the run's tables."""
    input:
        [model.model for model in GRID.models()],
    output:
        report(
            f"{REPORT}/provenance.html",
            caption="../report/provenance.rst",
            category="Run",
            labels={"result": "provenance"},
        ),
    log:
        f"results/{RUN}/logs/report_provenance.log",
    conda:
        conda_env("report")
    containerized:
        container_image("report")
    threads: threads_of("report_provenance")
    resources:
        **resources_of("report_provenance", mem_mb=1000, runtime=10),
    params:
        config=config,
        cells=[{k: v for k, v in cell.items() if k != "entry"} for cell in CELL_PAGES],
        methods={
            method: {"model": GRID.model_params(method)}
            | (
                {}
                if method_spec(method).trains_on == "nothing"
                else {"training": GRID.training_settings(stage, method)}
            )
            for stage, methods in (("retrieval", GRID.retrievers), ("rerank", GRID.rerankers))
            for method in methods
        },
        workflow_dir=workflow.basedir,
    script:
        "../workflow_scripts/report_provenance.py"
