from seqrerank.console import configure_logging
from seqrerank.data.dataset import dataset_inputs
from seqrerank.report.pages import write_dataset

configure_logging(snakemake.log[0])
write_dataset(
    dataset_inputs(snakemake.input),
    snakemake.wildcards.dataset,
    page_path=snakemake.output.page,
    histogram_path=snakemake.output.histogram,
)
