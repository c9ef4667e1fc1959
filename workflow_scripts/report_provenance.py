from seqrerank.console import configure_logging
from seqrerank.report.pages import write_provenance

configure_logging(snakemake.log[0])
write_provenance(
    snakemake.params.config,
    snakemake.params.cells,
    snakemake.params.methods,
    snakemake.params.workflow_dir,
    snakemake.output[0],
)
