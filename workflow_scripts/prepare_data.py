from seqrerank.console import configure_logging
from seqrerank.data.dataset import dataset_inputs
from seqrerank.data.prepare import prepare, raw_inputs

configure_logging(snakemake.log[0])
prepare(snakemake.params.spec, raw_inputs(snakemake.input), dataset_inputs(snakemake.output))
