from seqrerank.candidates import retrieved_inputs
from seqrerank.console import configure_logging
from seqrerank.data.dataset import dataset_inputs
from seqrerank.distributed import Processes, launch
from seqrerank.features import feature_inputs
from seqrerank.hub import use_cache
from seqrerank.pipeline import RerankCandidates, run_reranker_training
from seqrerank.training import TrainSettings

configure_logging(snakemake.log[0])
# Models load from the model cache, offline (the download_models rule fetched them).
use_cache(snakemake.params.model_cache)
candidates = None
if hasattr(snakemake.input, "training_candidates"):  # a reranker trained on candidates
    candidates = RerankCandidates(
        training=snakemake.input.training_candidates,
        validation=snakemake.input.validation_candidates,
        top_k=snakemake.params.top_k,
    )
launch(
    run_reranker_training,
    Processes(**snakemake.params.processes),
    log_path=snakemake.log[0],
    threads=snakemake.threads,
    method=snakemake.params.method,
    dataset=dataset_inputs(snakemake.input),
    params=snakemake.params.model,
    settings=TrainSettings(**snakemake.params.training),
    model_path=snakemake.output.model,
    history_path=snakemake.output.history,
    checkpoint_dir=snakemake.params.checkpoint_dir,
    features=feature_inputs(snakemake.input),
    retrieved=retrieved_inputs(snakemake.input),
    candidates=candidates,
    importance_path=snakemake.params.importance,
)
