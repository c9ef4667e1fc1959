rule aggregate:
    """The comparison table over the whole grid: results/<run>/comparison.{csv,md}."""
    input:
        metrics=[cell["metrics"] for cell in grid_cells()],
        ranks=[cell["metrics"].rsplit("/", 1)[0] + "/ranks.csv" for cell in grid_cells()],
    output:
        csv=f"results/{RUN}/comparison.csv",
        markdown=f"results/{RUN}/comparison.md",
    params:
        cells=[{k: v for k, v in cell.items() if k != "metrics"} for cell in grid_cells()],
    log:
        f"results/{RUN}/logs/aggregate.log",
    benchmark:
        f"results/{RUN}/benchmarks/aggregate.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/report.yaml"
    script:
        "../workflow_scripts/aggregate.py"
