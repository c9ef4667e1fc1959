rule item_features:
    """An item feature of a dataset (CLIP image/text embeddings, sentence-encoder text
    embeddings, attribute multi-hots), computed once and shared by every method and seed."""
    input:
        unpack(feature_models),
        **data_files("{dataset}"),
        images=feature_images,
    output:
        FEATURES,
    log:
        f"{LOGS}/item_features_{{feature}}.log",
    benchmark:
        f"{BENCHMARKS}/item_features_{{feature}}.tsv"
    conda:
        conda_env("data")
    containerized:
        container_image("data")
    threads: threads_of("item_features", 2)
    resources:
        **resources_of("item_features", mem_mb=8000, runtime=120),
    params:
        modality="{feature}",
        settings=config["features"],
        model_cache=GRID.model_cache(),
    script:
        "../workflow_scripts/item_features.py"
