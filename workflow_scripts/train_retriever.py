from seqrerank.candidates import retrieved_inputs
from seqrerank.console import configure_logging
from seqrerank.data.dataset import dataset_inputs
from seqrerank.features import feature_inputs
from seqrerank.pipeline import run_retriever
from seqrerank.training import TrainSettings

configure_logging(snakemake.log[0])
out = snakemake.output
run_retriever(
    snakemake.params.method,
    dataset=dataset_inputs(snakemake.input),
    params=snakemake.params.model,
    settings=TrainSettings(**snakemake.params.training),
    top_k=snakemake.params.top_k,
    model_path=out.model,
    history_path=out.history,
    candidates_path=out.candidates,
    metrics_path=out.metrics,
    ranks_path=out.ranks,
    checkpoint_dir=snakemake.params.checkpoint_dir,
    features=feature_inputs(snakemake.input),
    retrieved=retrieved_inputs(snakemake.input),
    threads=snakemake.threads,
)
