from seqrerank.console import configure_logging
from seqrerank.data.sources import download

configure_logging(snakemake.log[0])
source = snakemake.params.source
download(source["url"], snakemake.output[0], sha256=source.get("sha256"))
