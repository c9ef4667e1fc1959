from pathlib import Path

from seqrerank.console import configure_logging
from seqrerank.report.pages import write_dataset

configure_logging(snakemake.log[0])
write_dataset(
    Path(snakemake.input.stats).parent,
    snakemake.wildcards.dataset,
    page_path=snakemake.output.page,
    histogram_path=snakemake.output.histogram,
)
