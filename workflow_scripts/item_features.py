from pathlib import Path

from seqrerank.console import configure_logging
from seqrerank.encoders import FeatureSettings, build_item_features
from seqrerank.pipeline import use_threads

configure_logging(snakemake.log[0])
use_threads(snakemake.threads)
build_item_features(
    snakemake.params.modality,
    data_dir=Path(snakemake.input.train).parent,
    settings=FeatureSettings(**snakemake.params.settings),
    out_path=snakemake.output[0],
)
