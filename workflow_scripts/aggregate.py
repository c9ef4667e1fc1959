from seqrerank.comparison import write_comparison
from seqrerank.console import configure_logging

configure_logging(snakemake.log[0])
write_comparison(
    snakemake.params.cells,
    list(snakemake.input.metrics),
    csv_path=snakemake.output.csv,
    markdown_path=snakemake.output.markdown,
    base_models=snakemake.params.base_models,
)
