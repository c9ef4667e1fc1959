rule download_raw:
    """Fetch a raw Amazon file (clusters with internet): resumable, checksum-verified."""
    output:
        f"{RAW}/{{filename}}",
    params:
        source=download_source,
    log:
        f"{LOGS}/download_{{filename}}.log",
    benchmark:
        f"{BENCHMARKS}/download_{{filename}}.tsv"
    threads: threads_of("download_raw")
    resources:
        **resources_of("download_raw", runtime=120),
    retries: 3
    conda:
        conda_env("data")
    containerized:
        container_image("data")
    script:
        "../workflow_scripts/download.py"


rule prepare_data:
    """Filters, k-core, reindexing, leave-one-out split, item table and stats of a dataset."""
    input:
        unpack(raw_inputs),
    output:
        **data_files("{dataset}"),
        images=directory(IMAGES),
    params:
        spec=lambda wildcards: config["datasets"][wildcards.dataset],
        raw_dir=RAW,
    log:
        f"{LOGS}/prepare_data.log",
    benchmark:
        f"{BENCHMARKS}/prepare_data.tsv"
    threads: threads_of("prepare_data")
    resources:
        **resources_of("prepare_data", mem_mb=4000),
    conda:
        conda_env("data")
    containerized:
        container_image("data")
    script:
        "../workflow_scripts/prepare_data.py"


rule ground_truth_candidates:
    """The target plus random negatives per user, shared by every reranker."""
    input:
        **data_files("{dataset}"),
    output:
        GROUND_TRUTH,
    params:
        negatives=config["rerank"]["negatives"],
    log:
        f"{LOGS}/ground_truth_candidates_seed{{seed}}.log",
    benchmark:
        f"{BENCHMARKS}/ground_truth_candidates_seed{{seed}}.tsv"
    threads: threads_of("ground_truth_candidates")
    resources:
        **resources_of("ground_truth_candidates", mem_mb=2000, runtime=30),
    conda:
        conda_env("retrieval")
    containerized:
        container_image("retrieval")
    script:
        "../workflow_scripts/ground_truth_candidates.py"
