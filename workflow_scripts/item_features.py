from seqrerank.console import configure_logging
from seqrerank.data.dataset import dataset_inputs
from seqrerank.encoders import FeatureSettings, build_item_features
from seqrerank.hub import use_cache
from seqrerank.pipeline import use_threads

configure_logging(snakemake.log[0])
# Models load from the model cache, offline (the download_models rule fetched them).
use_cache(snakemake.params.model_cache)
use_threads(snakemake.threads)
build_item_features(
    snakemake.params.modality,
    dataset=dataset_inputs(snakemake.input),
    settings=FeatureSettings(**snakemake.params.settings),
    out_path=snakemake.output[0],
)
