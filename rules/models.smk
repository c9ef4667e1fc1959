# Models that jobs load: the demo's tiny random-weight checkpoints, written by a rule, and models
# from the hub, fetched into the model cache before any job that loads one starts.


rule tiny_model:
    """A tiny random-weight model as a checkpoint folder (seqrerank.llm.tiny), for a config whose
    model_name points to results/models/tiny-<kind> (the demo): built once, loaded by path, and
    built again when the code that builds it changes."""
    input:
        Path(workflow.basedir, "seqrerank/llm/tiny.py"),
    output:
        directory(TINY_MODEL),
    log:
        "results/models/logs/tiny_model_{kind}.log",
    wildcard_constraints:
        kind="qwen3|qwen3vl|blip2|t5",
    localrule: True
    conda:
        conda_env("llm")
    containerized:
        container_image("llm")
    threads: threads_of("tiny_model")
    resources:
        **resources_of("tiny_model", mem_mb=4000, runtime=10),
    params:
        kind="{kind}",
        config=lambda wildcards: config["tiny_models"].get(wildcards.kind, {}),
    script:
        "../workflow_scripts/tiny_model.py"


rule download_models:
    """Every hub model the config names (LLMs, the Qwen3-VL pair, BLIP-2, CLIP, the text encoder,
    T5) into the model cache. A local rule: it runs where Snakemake runs (the login node, online),
    and the jobs, on compute nodes that are often offline, load them from the cache."""
    output:
        HUB_MODELS,
    log:
        "results/models/logs/download_models.log",
    retries: 2
    localrule: True
    conda:
        conda_env("data")
    containerized:
        container_image("data")
    threads: threads_of("download_models")
    resources:
        **resources_of("download_models", mem_mb=4000, runtime=240),
    params:
        models=GRID.hub_models(),
        cache=GRID.model_cache(),
    script:
        "../workflow_scripts/download_models.py"
