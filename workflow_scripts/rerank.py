from seqrerank.candidates import retrieved_inputs
from seqrerank.console import configure_logging
from seqrerank.data.dataset import dataset_inputs
from seqrerank.distributed import Processes, launch
from seqrerank.features import feature_inputs
from seqrerank.hub import use_cache
from seqrerank.pipeline import run_rerank

configure_logging(snakemake.log[0])
# Models load from the model cache, offline (the download_models rule fetched them).
use_cache(snakemake.params.model_cache)
launch(
    run_rerank,
    Processes(**snakemake.params.processes),
    log_path=snakemake.log[0],
    threads=snakemake.threads,
    dataset=dataset_inputs(snakemake.input),
    model_path=snakemake.input.model,
    candidates_path=snakemake.input.candidates,
    top_k=snakemake.params.top_k,
    reranked_path=snakemake.output.reranked,
    metrics_path=snakemake.output.metrics,
    ranks_path=snakemake.output.ranks,
    label=snakemake.params.label,
    features=feature_inputs(snakemake.input),
    retrieved=retrieved_inputs(snakemake.input),
)
