# Paths, wildcard constraints, input functions and params shared by the rules.
# Kept cheap: every SLURM job re-parses this file, so nothing here imports torch.
import re
from pathlib import Path

from seqrerank import slurm
from seqrerank.config import model_params, training_settings
from seqrerank.data.dataset import DATASET_FILES, IMAGES_FOLDER, ITEM_TEXT_FILES
from seqrerank.registry import FEATURE_SOURCES, MODALITIES, method_spec

RUN = config["run"]
SLURM = slurm.load_settings()
DATASETS = list(config["datasets"])
SEEDS = config["seeds"]
RETRIEVERS = config["retrievers"]
RERANKERS = config["rerankers"]
MODES = config["modes"]

DATA = "results/{dataset}/data"
RAW = "results/{dataset}/raw"
GROUND_TRUTH = "results/{dataset}/candidates/ground_truth/seed{seed}.csv"
RETRIEVAL = "results/{dataset}/retrieval/{retriever}/seed{seed}"
RERANK_MODEL = "results/{dataset}/rerank/{reranker}/trained_on_{source}/seed{seed}"
RERANK_CELL = "results/{dataset}/rerank/{reranker}/{mode}/{retriever}/seed{seed}"
FEATURES = "results/{dataset}/features/{feature}.pt"
LOGS = "results/{dataset}/logs"
BENCHMARKS = "results/{dataset}/benchmarks"
IMAGES = f"{DATA}/{IMAGES_FOLDER}"
TINY_MODEL = "results/models/tiny-{kind}"


def _one_of(names):
    return "|".join(re.escape(name) for name in names)


wildcard_constraints:
    dataset=_one_of(DATASETS),
    retriever=_one_of([*RETRIEVERS, "none"]),
    reranker=_one_of(RERANKERS) if RERANKERS else "(?!)",
    mode=_one_of(MODES),
    source=_one_of(["sequences", "ground_truth", *RETRIEVERS]),
    feature=_one_of(MODALITIES),
    seed=r"\d+",
    filename=r"[^/]+",


def threads_of(rule_name, default=1):
    return config["resources"].get(rule_name, {}).get("threads", default)


def resources_of(rule_name, mem_mb=2000, runtime=60, several_gpus=False):
    """Resources of a rule: the defaults given here, overridden by config `resources.<rule>`
    (threads aside, see threads_of). Given `gpu` there, a job asks for that many GPUs (on each
    of its `nodes`) and goes to the GPU partition of the user's SLURM settings
    (seqrerank/slurm.py). Only rules marked `several_gpus` use more than one GPU."""
    chosen = {"mem_mb": mem_mb, "runtime": runtime}
    chosen.update(config["resources"].get(rule_name, {}))
    chosen.pop("threads", None)
    gpus, nodes = chosen.get("gpu", 0), chosen.pop("nodes", 1)
    if (gpus > 1 or nodes > 1) and not several_gpus:
        raise ValueError(
            f"resources.{rule_name}: {rule_name} runs on one GPU of one node; only "
            "train_reranker and rerank take several (gpu > 1, nodes > 1)"
        )
    if nodes > 1:
        if not gpus:
            raise ValueError(f"resources.{rule_name}: nodes > 1 needs gpu (GPUs per node)")
        del chosen["gpu"]  # asked per node by slurm.placement
    return {**chosen, **slurm.placement(SLURM, gpus=gpus, nodes=nodes)}


def processes_of(rule_name):
    """The processes of a train_reranker or rerank job (seqrerank.distributed): one per GPU on
    each node of config `resources.<rule>`. A reranker with `backend: vllm` runs in one process,
    where vLLM spreads the model over the job's GPUs itself (`tensor_parallel_size`)."""
    chosen = config["resources"].get(rule_name, {})
    several = {"per_node": max(chosen.get("gpu", 0), 1), "nodes": chosen.get("nodes", 1)}

    def processes(wildcards):
        if model_params(config, wildcards.reranker).get("backend") != "vllm":
            return several
        if several["nodes"] > 1:
            raise ValueError(f"resources.{rule_name}: backend vllm runs on one node")
        return {"per_node": 1, "nodes": 1}

    return processes


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


# ---- data -------------------------------------------------------------------------------------


def data_files(dataset):
    """The prepared dataset's files, by input/output name ("items" is reserved by Snakemake)."""
    return {
        "item_table" if role == "items" else role: f"results/{dataset}/data/{name}"
        for role, name in DATASET_FILES.items()
    }


def raw_inputs(wildcards):
    """The raw files a dataset is prepared from: downloaded ones, or local paths from config."""
    spec = config["datasets"][wildcards.dataset]
    files = {}
    for i, name in enumerate(spec.get("download", {})):
        files[f"download{i}"] = f"results/{wildcards.dataset}/raw/{name}"
    for key in ("ratings", "reviews", "meta", "path", "attributes"):
        if key in spec:
            files[key] = spec[key]
    return files


def download_source(wildcards):
    downloads = config["datasets"][wildcards.dataset].get("download", {})
    if wildcards.filename not in downloads:
        raise ValueError(
            f"datasets.{wildcards.dataset}.download has no entry for {wildcards.filename!r}"
        )
    return downloads[wildcards.filename]


# ---- item features -----------------------------------------------------------------------------


def dataset_modalities(dataset):
    """The item features a dataset provides, by its settings."""
    spec = config["datasets"][dataset]
    provided = {"image": spec["use_image"], "text": spec["use_text"], "attributes": "attributes" in spec}
    return [modality for modality in MODALITIES if provided[modality]]


def feature_images(wildcards):
    """The images folder, for the image feature only (its content is what the feature reads)."""
    return IMAGES.format(dataset=wildcards.dataset) if wildcards.feature == "image" else []


def feature_files(dataset, method):
    """The feature files a method reads (its registry entry's features that the dataset
    provides), as named inputs ``<modality>_features``."""
    wanted = method_spec(method).features
    if not wanted:
        return {}
    chosen = [m for m in dataset_modalities(dataset) if m in wanted]
    if not chosen:
        options = "; or ".join(f"{m}: datasets.{dataset}.{FEATURE_SOURCES[m]}" for m in wanted)
        raise ValueError(
            f"{method} needs item features and dataset {dataset} provides none. "
            f"Enable one in the config: {options}"
        )
    return {f"{m}_features": FEATURES.format(dataset=dataset, feature=m) for m in chosen}


def item_inputs(dataset, method):
    """The generated item texts (``generated_<column>``) and the images folder a method reads."""
    spec = method_spec(method)
    texts = {f"generated_{c}": f"{DATA}/{ITEM_TEXT_FILES[c]}" for c in spec.item_texts}
    images = {"images": IMAGES} if spec.images else {}
    return {key: path.format(dataset=dataset) for key, path in {**texts, **images}.items()}


def checkpoint_input(model_name):
    """A model that a rule of the workflow writes (the demo's tiny models) as a named input,
    so that it is written first; a hub id or a path of the user's needs nothing."""
    return {"checkpoint": model_name} if model_name.startswith(TINY_MODEL.split("{")[0]) else {}


def method_inputs(method_wildcard):
    """Input function: what the job's method reads beside the dataset's standard files."""

    def inputs(wildcards):
        dataset, method = wildcards.dataset, getattr(wildcards, method_wildcard)
        model_name = model_params(config, method).get("model_name", "")
        return {
            **feature_files(dataset, method),
            **item_inputs(dataset, method),
            **checkpoint_input(model_name),
        }

    return inputs


def summary_settings(small):
    """Settings of the semantic-summary rule: the main summariser model, or the small one."""
    settings = dict(config["semantic_summaries"])
    small_model = settings.pop("small_model_name")
    return {**settings, "model_name": small_model} if small else settings


# ---- candidates and models --------------------------------------------------------------------


def check_cell(wildcards):
    if (wildcards.mode == "ground_truth") != (wildcards.retriever == "none"):
        raise ValueError(
            "ground_truth cells do not depend on a retriever and retrieval cells need one: "
            f"use rerank/{wildcards.reranker}/ground_truth/none/... or "
            f"rerank/{wildcards.reranker}/retrieval/<retriever>/..., "
            f"not {wildcards.mode}/{wildcards.retriever}"
        )


def cell_candidates(wildcards):
    check_cell(wildcards)
    if wildcards.mode == "ground_truth":
        return GROUND_TRUTH.format(**wildcards)
    return f"{RETRIEVAL}/retrieved.csv".format(**wildcards)


def training_source(reranker, mode, retriever):
    """What a reranker's model is trained on, which decides how many models a grid needs: one
    per dataset for sequence-trained rerankers, one per candidate source otherwise (one in all
    with `rerank.train_candidates: ground_truth`)."""
    if method_spec(reranker).trains_on == "sequences":
        return "sequences"
    if mode == "ground_truth" or config["rerank"]["train_candidates"] == "ground_truth":
        return "ground_truth"
    return retriever


def source_candidates(wildcards, source):
    if source == "ground_truth":
        return GROUND_TRUTH.format(**wildcards)
    return f"{RETRIEVAL}/retrieved.csv".format(retriever=source, **wildcards)


def reranker_training_inputs(wildcards):
    """The dataset, the item texts the reranker reads and, for one that trains on candidates,
    its source's lists: validation on their val split, training on their train split, or on
    the target plus random negatives with `rerank.train_candidates: random` (LlamaRec). Source
    ground_truth (see training_source) has the random lists for both."""
    inputs = {**data_files(wildcards.dataset), **method_inputs("reranker")(wildcards)}
    if method_spec(wildcards.reranker).trains_on == "candidates":
        lists = source_candidates(wildcards, wildcards.source)
        random = config["rerank"]["train_candidates"] == "random"
        inputs["validation_candidates"] = lists
        inputs["training_candidates"] = GROUND_TRUTH.format(**wildcards) if random else lists
    return inputs


def cell_model(wildcards):
    check_cell(wildcards)
    source = training_source(wildcards.reranker, wildcards.mode, wildcards.retriever)
    return f"{RERANK_MODEL}/model.pt".format(source=source, **wildcards)


def train_settings(stage, method_wildcard):
    def settings(wildcards):
        method = getattr(wildcards, method_wildcard)
        return {**training_settings(config, stage, method), "seed": int(wildcards.seed)}

    return settings


def params_of(method_wildcard):
    return lambda wildcards: model_params(config, getattr(wildcards, method_wildcard))


# ---- the grid ---------------------------------------------------------------------------------


def grid_cells():
    """Every row of the comparison table with the metrics file it is read from."""
    cells = []
    for dataset in DATASETS:
        for seed in SEEDS:
            for retriever in RETRIEVERS:
                path = RETRIEVAL.format(dataset=dataset, retriever=retriever, seed=seed)
                cells.append(
                    dict(dataset=dataset, retriever=retriever, reranker="none",
                         mode="retrieval", seed=seed, metrics=f"{path}/retrieved_metrics.json")
                )
            for reranker in RERANKERS:
                sources = [r for r in RETRIEVERS if "retrieval" in MODES]
                if "ground_truth" in MODES:
                    sources.append("none")
                for retriever in sources:
                    mode = "ground_truth" if retriever == "none" else "retrieval"
                    path = RERANK_CELL.format(
                        dataset=dataset, reranker=reranker, mode=mode, retriever=retriever,
                        seed=seed,
                    )
                    cells.append(
                        dict(dataset=dataset, retriever=retriever, reranker=reranker,
                             mode=mode, seed=seed, metrics=f"{path}/metrics.json")
                    )
    return cells
