# Item texts generated from the item images, read by the qwen3vl_caption and
# qwen3vl_semantic_summary[_small] rerankers. Both rules cache per item under data/cache/, outside
# their outputs, so a failed or interrupted job resumes where it stopped.


rule caption_items:
    """BLIP-2 captions of the item images: results/<dataset>/data/captions.csv."""
    input:
        **data_files("{dataset}"),
    output:
        f"{DATA}/captions.csv",
    params:
        settings=config["captions"],
        cache_dir=f"{DATA}/cache/captions",
    log:
        f"{LOGS}/caption_items.log",
    benchmark:
        f"{BENCHMARKS}/caption_items.tsv"
    threads: resources_of("caption_items", threads=2)["threads"]
    resources:
        mem_mb=resources_of("caption_items", mem_mb=16000)["mem_mb"],
        runtime=resources_of("caption_items", runtime=240)["runtime"],
    conda:
        # LAVIS pins transformers 4.26, so it cannot share the models environment.
        "../envs/lavis.yaml" if config["captions"]["backend"] == "lavis" else "../envs/models.yaml"
    script:
        "../workflow_scripts/caption_items.py"


rule summarise_items:
    """Qwen3-VL semantic summaries of the items (image and title), by the configured model or,
    for semantic_summaries_small.csv, by the smaller one."""
    input:
        **data_files("{dataset}"),
    output:
        f"{DATA}/semantic_summaries{{small}}.csv",
    params:
        settings=lambda wildcards: summary_settings(small=bool(wildcards.small)),
        cache_dir=f"{DATA}/cache/semantic_summaries{{small}}",
    log:
        f"{LOGS}/summarise_items{{small}}.log",
    benchmark:
        f"{BENCHMARKS}/summarise_items{{small}}.tsv"
    wildcard_constraints:
        small="(_small)?",
    threads: resources_of("summarise_items", threads=2)["threads"]
    resources:
        mem_mb=resources_of("summarise_items", mem_mb=32000)["mem_mb"],
        runtime=resources_of("summarise_items", runtime=480)["runtime"],
    conda:
        "../envs/models.yaml"
    script:
        "../workflow_scripts/summarise_items.py"
