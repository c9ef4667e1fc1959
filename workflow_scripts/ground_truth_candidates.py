from pathlib import Path

from seqrerank.console import configure_logging
from seqrerank.pipeline import write_ground_truth

configure_logging(snakemake.log[0])
write_ground_truth(
    data_dir=Path(snakemake.input.train).parent,
    num_negatives=snakemake.params.negatives,
    seed=int(snakemake.wildcards.seed),
    out_path=snakemake.output[0],
)
