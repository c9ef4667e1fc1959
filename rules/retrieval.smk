rule train_retriever:
    """Stage 1: train with per-epoch validation and early stopping, then export the top-K
    candidates of every user and the full-ranking metrics."""
    input:
        unpack(method_inputs("retriever")),
        **data_files("{dataset}"),
    output:
        model=f"{RETRIEVAL}/model.pt",
        history=f"{RETRIEVAL}/history.json",
        candidates=f"{RETRIEVAL}/retrieved.csv",
        metrics=f"{RETRIEVAL}/retrieved_metrics.json",
        ranks=f"{RETRIEVAL}/ranks.csv",
    log:
        f"{LOGS}/train_retriever_{{retriever}}_seed{{seed}}.log",
    benchmark:
        f"{BENCHMARKS}/train_retriever_{{retriever}}_seed{{seed}}.tsv"
    conda:
        conda_env("{retriever}")
    containerized:
        container_image("{retriever}")
    threads: threads_of("train_retriever", 2, method="retriever")
    resources:
        **resources_of("train_retriever", mem_mb=8000, runtime=240, method="retriever"),
    params:
        method="{retriever}",
        model=params_of("retriever"),
        training=train_settings("retrieval", "retriever"),
        top_k=config["retrieval"]["top_k"],
        checkpoint_dir=f"{RETRIEVAL}/checkpoints",
    script:
        "../workflow_scripts/train_retriever.py"
