from seqrerank.console import configure_logging
from seqrerank.data.dataset import dataset_inputs
from seqrerank.pipeline import write_ground_truth

configure_logging(snakemake.log[0])
write_ground_truth(
    dataset=dataset_inputs(snakemake.input),
    num_negatives=snakemake.params.negatives,
    seed=int(snakemake.wildcards.seed),
    out_path=snakemake.output[0],
)
