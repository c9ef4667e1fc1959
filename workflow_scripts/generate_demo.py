from seqrerank.console import configure_logging
from seqrerank.data.synthetic import DemoFiles, generate_demo

configure_logging(snakemake.log[0])
generate_demo(DemoFiles(**snakemake.output), **snakemake.params.generator)
