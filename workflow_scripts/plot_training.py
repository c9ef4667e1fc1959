from seqrerank.console import configure_logging
from seqrerank.report.plots import plot_training

configure_logging(snakemake.log[0])
for history, metric, title, figure in zip(
    snakemake.input,
    snakemake.params.metrics,
    snakemake.params.titles,
    snakemake.output,
    strict=True,
):
    plot_training(history, metric, title, figure)
