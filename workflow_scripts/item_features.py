from seqrerank.console import configure_logging
from seqrerank.data.dataset import dataset_inputs
from seqrerank.encoders import FeatureSettings, build_item_features
from seqrerank.pipeline import use_threads

configure_logging(snakemake.log[0])
use_threads(snakemake.threads)
build_item_features(
    snakemake.params.modality,
    dataset=dataset_inputs(snakemake.input),
    settings=FeatureSettings(**snakemake.params.settings),
    out_path=snakemake.output[0],
)
