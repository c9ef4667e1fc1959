from seqrerank.console import configure_logging
from seqrerank.data.prepare import fetch_item_images, raw_inputs

configure_logging(snakemake.log[0])
fetch_item_images(snakemake.params.spec, raw_inputs(snakemake.input), snakemake.output[0])
