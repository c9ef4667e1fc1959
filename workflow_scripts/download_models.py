from seqrerank.console import configure_logging
from seqrerank.model_download import fetch_models

configure_logging(snakemake.log[0])
fetch_models(snakemake.params.models, snakemake.params.cache, snakemake.output[0])
