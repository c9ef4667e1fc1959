from seqrerank.console import configure_logging
from seqrerank.llm.tiny import save_tiny_model

configure_logging(snakemake.log[0])
save_tiny_model(snakemake.params.kind, snakemake.output[0], **snakemake.params.config)
