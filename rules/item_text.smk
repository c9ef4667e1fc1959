# Item texts generated from the item images, read by the qwen3vl_caption and
# qwen3vl_semantic_summary[_small] rerankers. Both rules cache per item under data/cache/, outside
# their outputs, so a failed or interrupted job resumes where it stopped.

# LAVIS pins transformers 4.26, so it cannot share the vision-language environment.
CAPTION_ENV = "captions-lavis" if config["captions"]["backend"] == "lavis" else "vlm"


rule caption_items:
    """BLIP-2 captions of the item images: results/<dataset>/data/captions.csv."""
    input:
        **data_files("{dataset}"),
        **checkpoint_input(config["captions"]["model_name"]),
        **hub_input(config["captions"]["model_name"]),
        images=IMAGES,
    output:
        f"{DATA}/captions.csv",
    log:
        f"{LOGS}/caption_items.log",
    benchmark:
        f"{BENCHMARKS}/caption_items.tsv"
    conda:
        conda_env(CAPTION_ENV)
    containerized:
        container_image(CAPTION_ENV)
    threads: threads_of("caption_items", 2)
    resources:
        **resources_of("caption_items", mem_mb=16000, runtime=240),
    params:
        settings=config["captions"],
        model_cache=GRID.model_cache(),
        cache_dir=f"{DATA}/cache/captions",
    script:
        "../workflow_scripts/caption_items.py"


rule summarise_items:
    """Qwen3-VL semantic summaries of the items (image and title), by the configured model or,
    for semantic_summaries_small.csv, by the smaller one."""
    input:
        unpack(summariser_models),
        **data_files("{dataset}"),
        images=IMAGES,
    output:
        f"{DATA}/semantic_summaries{{small}}.csv",
    log:
        f"{LOGS}/summarise_items{{small}}.log",
    benchmark:
        f"{BENCHMARKS}/summarise_items{{small}}.tsv"
    wildcard_constraints:
        small="(_small)?",
    conda:
        conda_env("vlm")
    containerized:
        container_image("vlm")
    threads: threads_of("summarise_items", 2)
    resources:
        **resources_of("summarise_items", mem_mb=32000, runtime=480),
    params:
        settings=lambda wildcards: GRID.summary_settings(small=bool(wildcards.small)),
        model_cache=GRID.model_cache(),
        cache_dir=f"{DATA}/cache/semantic_summaries{{small}}",
    script:
        "../workflow_scripts/summarise_items.py"
