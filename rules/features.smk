rule item_features:
    """An item feature of a dataset (CLIP image/text embeddings, sentence-encoder text
    embeddings, attribute multi-hots), computed once and shared by every method and seed."""
    input:
        **data_files("{dataset}"),
    output:
        FEATURES,
    params:
        modality="{feature}",
        settings=config["features"],
    log:
        f"{LOGS}/item_features_{{feature}}.log",
    benchmark:
        f"{BENCHMARKS}/item_features_{{feature}}.tsv"
    threads: resources_of("item_features", threads=2)["threads"]
    resources:
        mem_mb=resources_of("item_features", mem_mb=8000)["mem_mb"],
        runtime=resources_of("item_features", runtime=120)["runtime"],
    conda:
        "../envs/models.yaml"
    script:
        "../workflow_scripts/item_features.py"
