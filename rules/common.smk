# Wildcard constraints and thin input functions: the grid itself (its cells, models, the files
# each job reads, resources) is seqrerank.grid, which this file asks. Kept cheap: every SLURM
# job parses the workflow again, so nothing here imports torch.
import re
from pathlib import Path

from seqrerank.data.layout import DEMO_CATEGORY, IMAGES_FOLDER
from seqrerank.grid import (
    BENCHMARKS,
    DATA,
    FEATURES,
    GROUND_TRUTH,
    IMAGES,
    LOGS,
    RAW,
    RERANK_CELL,
    RERANK_MODEL,
    RETRIEVAL,
    TINY_MODEL,
    Grid,
    checkpoint_input,
    data_files,
    hub_input,
)
from seqrerank.hub import HUB_MODELS
from seqrerank.registry import MODALITIES, method_spec

GRID = Grid(config)
RUN = config["run"]
# An Apptainer job sees only the working directory: bind the folders of the data files the config
# names and the model cache (jobs on a cluster parse this again, where those folders exist).
workflow.deployment_settings.apptainer_args = " ".join(
    [workflow.deployment_settings.apptainer_args, *(f"--bind {p}" for p in GRID.bind_paths())]
).strip()


def _one_of(names):
    return "|".join(re.escape(name) for name in names) or "(?!)"


wildcard_constraints:
    dataset=_one_of(GRID.datasets),
    retriever=_one_of([*GRID.retrievers, "none"]),
    reranker=_one_of(GRID.rerankers),
    mode=_one_of(GRID.modes),
    source=_one_of(["sequences", "ground_truth", *GRID.retrievers]),
    feature=_one_of(MODALITIES),
    seed=r"\d+",
    filename=r"[^/]+",


# ---- resources: config `resources.<rule>`, overridden by `methods.<name>.resources` ----------


def threads_of(rule_name, default=1, method=None):
    """The threads of a rule's jobs; with a method wildcard, a function of the job's."""
    if method is None:
        return GRID.threads(rule_name, default=default)
    return lambda wildcards: GRID.threads(rule_name, getattr(wildcards, method), default)


def resources_of(rule_name, mem_mb=2000, runtime=60, method=None):
    """The resources of a rule's jobs (seqrerank.grid.Grid.resources); with a method wildcard,
    each one a function of the job's method."""
    defaults = {"mem_mb": mem_mb, "runtime": runtime}
    if method is None:
        return GRID.resources(rule_name, **defaults)
    keys = GRID.resources(rule_name, **defaults)  # the same names for every method

    def of_job(key):
        return lambda wildcards: GRID.resources(rule_name, getattr(wildcards, method), **defaults)[
            key
        ]

    return {key: of_job(key) for key in keys}


def processes_of(rule_name):
    return lambda wildcards: GRID.processes(rule_name, wildcards.reranker)


# ---- software: one conda env and one Apptainer image per method family ------------------------


def _with_env(env, path_of):
    """path_of(env); for a method wildcard such as "{reranker}", a function of the job's
    wildcards giving path_of(the env that the registry assigns to the job's method)."""
    if not env.startswith("{"):
        return path_of(env)
    wildcard = env.strip("{}")

    def of_method(wildcards):
        return path_of(method_spec(getattr(wildcards, wildcard)).env)

    of_method.method_wildcard = wildcard  # for the checks in tests/test_environments.py
    return of_method


def conda_env(env):
    """The conda environment of a rule: envs/<env>.yaml (see _with_env)."""
    return _with_env(env, lambda name: f"../envs/{name}.yaml")


def container_image(env):
    """The Apptainer image of a rule: config `containers` with {env} filled in, local .sif files
    built by `make containers` by default; a relative path is taken from the workflow folder."""

    def image(name):
        image = config["containers"].format(env=name)
        return image if "://" in image else str(Path(workflow.basedir, image))

    return _with_env(env, image)


# ---- input functions ----------------------------------------------------------------------------


def raw_files(wildcards):
    return GRID.raw_files(wildcards.dataset)


def raw_sources(wildcards):
    """The raw files a dataset's image download reads: all but the images."""
    return {k: v for k, v in GRID.raw_files(wildcards.dataset).items() if k != "images"}


def download_source(wildcards):
    downloads = config["datasets"][wildcards.dataset].get("download", {})
    if wildcards.filename not in downloads:
        raise ValueError(
            f"datasets.{wildcards.dataset}.download has no entry for {wildcards.filename!r}"
        )
    return downloads[wildcards.filename]


def feature_images(wildcards):
    """The images folder, for the image feature only (its content is what the feature reads)."""
    return IMAGES.format(dataset=wildcards.dataset) if wildcards.feature == "image" else []


def summariser_models(wildcards):
    model_name = GRID.summary_settings(bool(wildcards.small))["model_name"]
    return {**checkpoint_input(model_name), **hub_input(model_name)}


def feature_models(wildcards):
    return hub_input(*GRID.feature_models(wildcards.feature))


def method_inputs(method_wildcard):
    return lambda wildcards: GRID.method_inputs(
        wildcards.dataset, getattr(wildcards, method_wildcard), wildcards.seed
    )


def reranker_training_inputs(wildcards):
    return GRID.reranker_training_inputs(**dict(wildcards.items()))


def cell_model(wildcards):
    return GRID.cell_model(**dict(wildcards.items()))


def cell_candidates(wildcards):
    return GRID.cell_candidates(**dict(wildcards.items()))


def train_settings(stage, method_wildcard):
    def settings(wildcards):
        settings = GRID.training_settings(stage, getattr(wildcards, method_wildcard))
        return {**settings, "seed": int(wildcards.seed)}

    return settings


def params_of(method_wildcard):
    return lambda wildcards: GRID.model_params(getattr(wildcards, method_wildcard))
