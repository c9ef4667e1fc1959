rule train_retriever:
    """Stage 1: train with per-epoch validation and early stopping, then export the top-K
    candidates of every user and the full-ranking metrics."""
    input:
        unpack(feature_inputs("retriever")),
        **data_files("{dataset}"),
    output:
        model=f"{RETRIEVAL}/model.pt",
        history=f"{RETRIEVAL}/history.json",
        candidates=f"{RETRIEVAL}/retrieved.csv",
        metrics=f"{RETRIEVAL}/retrieved_metrics.json",
        ranks=f"{RETRIEVAL}/ranks.csv",
    params:
        method="{retriever}",
        model=params_of("retriever"),
        training=train_settings("retrieval", "retriever"),
        top_k=config["retrieval"]["top_k"],
        checkpoint_dir=f"{RETRIEVAL}/checkpoints",
    log:
        f"{LOGS}/train_retriever_{{retriever}}_seed{{seed}}.log",
    benchmark:
        f"{BENCHMARKS}/train_retriever_{{retriever}}_seed{{seed}}.tsv"
    threads: resources_of("train_retriever", threads=2)["threads"]
    resources:
        mem_mb=resources_of("train_retriever", mem_mb=8000)["mem_mb"],
        runtime=resources_of("train_retriever", runtime=240)["runtime"],
    conda:
        "../envs/models.yaml"
    script:
        "../workflow_scripts/train_retriever.py"
