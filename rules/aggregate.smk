from seqrerank.report.base_models import base_models


rule aggregate:
    """The comparison table over the whole grid: results/<run>/comparison.{csv,md}."""
    input:
        metrics=[cell.metrics for cell in GRID.cells()],
        ranks=[cell.ranks for cell in GRID.cells()],
    output:
        csv=f"results/{RUN}/comparison.csv",
        markdown=f"results/{RUN}/comparison.md",
    log:
        f"results/{RUN}/logs/aggregate.log",
    benchmark:
        f"results/{RUN}/benchmarks/aggregate.tsv"
    conda:
        conda_env("report")
    containerized:
        container_image("report")
    threads: threads_of("aggregate")
    resources:
        **resources_of("aggregate", mem_mb=1000, runtime=10),
    params:
        cells=[cell.keys() for cell in GRID.cells()],
        # The pretrained models under each method; the tiny_model rule's are random-weight.
        base_models=base_models(config, random_weight_prefix=TINY_MODEL.split("{")[0]),
    script:
        "../workflow_scripts/aggregate.py"
