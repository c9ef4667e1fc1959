from seqrerank.console import configure_logging
from seqrerank.report.pages import write_comparison_pages

configure_logging(snakemake.log[0])
write_comparison_pages(
    snakemake.input[0],
    snakemake.params.metrics,
    page_path=snakemake.output.page,
    summary_path=snakemake.output.summary,
    chart_paths=snakemake.output.charts,
)
