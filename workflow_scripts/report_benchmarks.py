from seqrerank.console import configure_logging
from seqrerank.report.pages import write_benchmarks

configure_logging(snakemake.log[0])
write_benchmarks(snakemake.params.folders, snakemake.output[0])
