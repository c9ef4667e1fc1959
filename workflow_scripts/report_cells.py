from seqrerank.console import configure_logging
from seqrerank.report.pages import write_cell

configure_logging(snakemake.log[0])
for cell, page in zip(snakemake.params.cells, snakemake.output, strict=True):
    write_cell(cell, cell["metrics"], cell["models"], page)
