rule train_reranker:
    """Stage 2 training. Rerankers trained on sequences (BERT4Rec) get one model per dataset and
    seed, shared by both candidate modes and every retriever; those trained on candidates (the
    LLM rerankers) get one per candidate source. Given several GPUs, data-parallel under torchrun
    (seqrerank.distributed)."""
    input:
        unpack(reranker_training_inputs),
    output:
        model=f"{RERANK_MODEL}/model.pt",
        history=f"{RERANK_MODEL}/history.json",
    log:
        f"{LOGS}/train_reranker_{{reranker}}_{{source}}_seed{{seed}}.log",
    benchmark:
        f"{BENCHMARKS}/train_reranker_{{reranker}}_{{source}}_seed{{seed}}.tsv"
    conda:
        conda_env("{reranker}")
    containerized:
        container_image("{reranker}")
    threads: threads_of("train_reranker", 2, method="reranker")
    resources:
        **resources_of("train_reranker", mem_mb=8000, runtime=240, method="reranker"),
    params:
        method="{reranker}",
        model=params_of("reranker"),
        training=train_settings("rerank", "reranker"),
        model_cache=GRID.model_cache(),
        checkpoint_dir=f"{RERANK_MODEL}/checkpoints",
        # Written by a method that reports feature importance (ltr); nothing reads it.
        importance=f"{RERANK_MODEL}/feature_importance.csv",
        top_k=config["rerank"]["top_k"],
        processes=processes_of("train_reranker"),
    script:
        "../workflow_scripts/train_reranker.py"


rule rerank:
    """One cell of the grid: rerank the candidates of a mode and evaluate on val and test. Given
    several GPUs, its users are shared out over them under torchrun (seqrerank.distributed)."""
    input:
        unpack(method_inputs("reranker")),
        **data_files("{dataset}"),
        model=cell_model,
        candidates=cell_candidates,
    output:
        reranked=f"{RERANK_CELL}/reranked.csv",
        metrics=f"{RERANK_CELL}/metrics.json",
        ranks=f"{RERANK_CELL}/ranks.csv",
    log:
        f"{LOGS}/rerank_{{reranker}}_{{mode}}_{{retriever}}_seed{{seed}}.log",
    benchmark:
        f"{BENCHMARKS}/rerank_{{reranker}}_{{mode}}_{{retriever}}_seed{{seed}}.tsv"
    conda:
        conda_env("{reranker}")
    containerized:
        container_image("{reranker}")
    threads: threads_of("rerank", 2, method="reranker")
    resources:
        **resources_of("rerank", mem_mb=4000, runtime=60, method="reranker"),
    params:
        top_k=config["rerank"]["top_k"],
        model_cache=GRID.model_cache(),
        label="{reranker} reranking {mode} candidates ({retriever})",
        processes=processes_of("rerank"),
    script:
        "../workflow_scripts/rerank.py"
