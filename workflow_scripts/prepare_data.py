from pathlib import Path

from seqrerank.console import configure_logging
from seqrerank.data.prepare import prepare_dataset

configure_logging(snakemake.log[0])
spec = snakemake.params.spec
prepare_dataset(
    spec,
    raw_dir=snakemake.params.raw_dir,
    out_dir=Path(snakemake.output.train).parent,
    seed=spec.get("synthetic", {}).get("seed", 42),
)
