rule download_raw:
    """Fetch a raw Amazon file (clusters with internet): resumable, checksum-verified."""
    output:
        f"{RAW}/{{filename}}",
    log:
        f"{LOGS}/download_{{filename}}.log",
    benchmark:
        f"{BENCHMARKS}/download_{{filename}}.tsv"
    wildcard_constraints:
        dataset=_one_of(GRID.sources_of("amazon")),
        filename=_one_of(
            n for d in GRID.datasets for n in config["datasets"][d].get("download", {})
        ),
    retries: 3
    conda:
        conda_env("data")
    containerized:
        container_image("data")
    threads: threads_of("download_raw")
    resources:
        **resources_of("download_raw", runtime=120),
    params:
        source=download_source,
    script:
        "../workflow_scripts/download.py"


rule generate_demo:
    """The built-in demo's raw files (Amazon's format, images as files)."""
    output:
        ratings=f"{RAW}/ratings_{DEMO_CATEGORY}.csv",
        meta=f"{RAW}/meta_{DEMO_CATEGORY}.json.gz",
        images=directory(f"{RAW}/{IMAGES_FOLDER}"),
    log:
        f"{LOGS}/generate_demo.log",
    wildcard_constraints:
        dataset=_one_of(GRID.sources_of("synthetic")),
    conda:
        conda_env("data")
    containerized:
        container_image("data")
    threads: threads_of("generate_demo")
    resources:
        **resources_of("generate_demo"),
    params:
        generator=lambda wildcards: config["datasets"][wildcards.dataset].get("synthetic", {}),
    script:
        "../workflow_scripts/generate_demo.py"


rule download_images:
    """The images of the items a dataset keeps, from its metadata's image URLs. A local rule: it
    runs where Snakemake runs (the login node, online), so no compute job touches the network."""
    input:
        unpack(raw_sources),
    output:
        directory(f"{RAW}/{IMAGES_FOLDER}"),
    log:
        f"{LOGS}/download_images.log",
    wildcard_constraints:
        dataset=_one_of(GRID.sources_of("amazon")),
    localrule: True
    conda:
        conda_env("data")
    containerized:
        container_image("data")
    threads: threads_of("download_images")
    resources:
        **resources_of("download_images", runtime=240),
    params:
        spec=lambda wildcards: config["datasets"][wildcards.dataset],
    script:
        "../workflow_scripts/download_images.py"


rule prepare_data:
    """Filters, k-core, reindexing, leave-one-out split, item table and stats of a dataset."""
    input:
        unpack(raw_files),
    output:
        **data_files("{dataset}"),
        images=directory(IMAGES),
    log:
        f"{LOGS}/prepare_data.log",
    benchmark:
        f"{BENCHMARKS}/prepare_data.tsv"
    conda:
        conda_env("data")
    containerized:
        container_image("data")
    threads: threads_of("prepare_data")
    resources:
        **resources_of("prepare_data", mem_mb=4000),
    params:
        spec=lambda wildcards: config["datasets"][wildcards.dataset],
    script:
        "../workflow_scripts/prepare_data.py"


rule ground_truth_candidates:
    """The target plus random negatives per user, shared by every reranker."""
    input:
        **data_files("{dataset}"),
    output:
        GROUND_TRUTH,
    log:
        f"{LOGS}/ground_truth_candidates_seed{{seed}}.log",
    benchmark:
        f"{BENCHMARKS}/ground_truth_candidates_seed{{seed}}.tsv"
    conda:
        conda_env("retrieval")
    containerized:
        container_image("retrieval")
    threads: threads_of("ground_truth_candidates")
    resources:
        **resources_of("ground_truth_candidates", mem_mb=2000, runtime=30),
    params:
        negatives=config["rerank"]["negatives"],
    script:
        "../workflow_scripts/ground_truth_candidates.py"
