from seqrerank.console import configure_logging
from seqrerank.data.dataset import dataset_inputs
from seqrerank.data.item_text import SummarySettings, write_item_texts
from seqrerank.hub import use_cache
from seqrerank.pipeline import use_threads

configure_logging(snakemake.log[0])
# Models load from the model cache, offline (the download_models rule fetched them).
use_cache(snakemake.params.model_cache)
use_threads(snakemake.threads)
write_item_texts(
    dataset=dataset_inputs(snakemake.input),
    column="semantic_summary" + snakemake.wildcards.small,
    out_path=snakemake.output[0],
    cache_dir=snakemake.params.cache_dir,
    settings=SummarySettings(**snakemake.params.settings),
)
