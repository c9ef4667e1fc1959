"""The grid of a workflow configuration, as plain data: the rows of its comparison table, the
model each row's ranking comes from, the files every job reads, and what each job asks of a
cluster. The workflow's input functions (rules/common.smk) ask this module, and it is tested
without Snakemake; it imports neither Snakemake nor torch, since every SLURM job parses the
workflow again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqrerank.config import model_params, training_settings
from seqrerank.data.layout import DATASET_FILES, DEMO_CATEGORY, IMAGES_FOLDER, ITEM_TEXT_FILES
from seqrerank.hub import HUB_MODELS, clip_model_id, default_cache, is_hub_id
from seqrerank.registry import FEATURE_SOURCES, MODALITIES, method_spec

# Where the workflow writes, with Snakemake's wildcards in braces.
DATA = "results/{dataset}/data"
RAW = "results/{dataset}/raw"
IMAGES = f"{DATA}/{IMAGES_FOLDER}"
GROUND_TRUTH = "results/{dataset}/candidates/ground_truth/seed{seed}.csv"
RETRIEVAL = "results/{dataset}/retrieval/{retriever}/seed{seed}"
RERANK_MODEL = "results/{dataset}/rerank/{reranker}/trained_on_{source}/seed{seed}"
RERANK_CELL = "results/{dataset}/rerank/{reranker}/{mode}/{retriever}/seed{seed}"
FEATURES = "results/{dataset}/features/{feature}.pt"
TINY_MODEL = "results/models/tiny-{kind}"
LOGS = "results/{dataset}/logs"
BENCHMARKS = "results/{dataset}/benchmarks"

# Rules whose jobs may take several GPUs (one process per GPU, seqrerank.distributed).
SEVERAL_GPUS = ("train_reranker", "rerank")


@dataclass(frozen=True)
class Cell:
    """One row of the comparison table per split: Stage 1 alone (reranker ``none``), or a
    reranker on ground-truth lists (retriever ``none``) or on a retriever's candidates."""

    dataset: str
    retriever: str
    reranker: str
    mode: str
    seed: int

    @property
    def folder(self) -> str:
        if self.reranker == "none":
            return RETRIEVAL.format(**self.keys())
        return RERANK_CELL.format(**self.keys())

    @property
    def metrics(self) -> str:
        name = "retrieved_metrics.json" if self.reranker == "none" else "metrics.json"
        return f"{self.folder}/{name}"

    @property
    def ranks(self) -> str:
        return f"{self.folder}/ranks.csv"

    def keys(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "retriever": self.retriever,
            "reranker": self.reranker,
            "mode": self.mode,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class TrainedModel:
    """A model the grid trains (each once, however many cells use it)."""

    stage: str
    """``retrieval`` or ``rerank``: whose training settings it trains with."""
    method: str
    dataset: str
    seed: int
    source: str | None
    """What a reranker trained on (``sequences``, ``ground_truth`` or a retriever)."""
    folder: str

    @property
    def model(self) -> str:
        return f"{self.folder}/model.pt"

    @property
    def history(self) -> str:
        return f"{self.folder}/history.json"


class Grid:
    def __init__(self, config: Mapping[str, Any]):
        self.config = config
        self.datasets = list(config["datasets"])
        self.seeds = list(config["seeds"])
        self.retrievers = list(config["retrievers"])
        self.rerankers = list(config["rerankers"])
        self.modes = list(config["modes"])

    # ---- the table and its models --------------------------------------------------------

    def cells(self) -> list[Cell]:
        """Every row of the comparison table, in table order."""
        cells = []
        for dataset in self.datasets:
            for seed in self.seeds:
                cells += [Cell(dataset, r, "none", "retrieval", seed) for r in self.retrievers]
                sources = self.retrievers if "retrieval" in self.modes else []
                for reranker in self.rerankers:
                    cells += [Cell(dataset, r, reranker, "retrieval", seed) for r in sources]
                    if "ground_truth" in self.modes:
                        cells.append(Cell(dataset, "none", reranker, "ground_truth", seed))
        return cells

    def training_source(self, reranker: str, mode: str, retriever: str) -> str:
        """What a reranker's model is trained on, which decides how many models a grid needs:
        one per dataset for sequence-trained rerankers, one per candidate source otherwise (one
        in all with ``rerank.train_candidates: ground_truth``)."""
        if method_spec(reranker).trains_on == "sequences":
            return "sequences"
        if mode == "ground_truth" or self.config["rerank"]["train_candidates"] == "ground_truth":
            return "ground_truth"
        return retriever

    def reranker_model(self, dataset: str, reranker: str, source: str, seed: int) -> TrainedModel:
        """The model of a reranker. A reranker that trains on sequences and is also one of the
        grid's retrievers (BERT4Rec) is trained once, as a retriever, and serves both stages."""
        if source == "sequences" and reranker in self.retrievers:
            folder = RETRIEVAL.format(dataset=dataset, retriever=reranker, seed=seed)
            return TrainedModel("retrieval", reranker, dataset, seed, None, folder)
        folder = RERANK_MODEL.format(dataset=dataset, reranker=reranker, source=source, seed=seed)
        return TrainedModel("rerank", reranker, dataset, seed, source, folder)

    def cell_models(self, cell: Cell) -> dict[str, TrainedModel]:
        """The models a cell's ranking comes from, by stage."""
        models = {}
        if cell.retriever != "none":
            folder = RETRIEVAL.format(**cell.keys())
            models["retrieval"] = TrainedModel(
                "retrieval", cell.retriever, cell.dataset, cell.seed, None, folder
            )
        if cell.reranker != "none":
            source = self.training_source(cell.reranker, cell.mode, cell.retriever)
            models["rerank"] = self.reranker_model(cell.dataset, cell.reranker, source, cell.seed)
        return models

    def models(self) -> list[TrainedModel]:
        """Every model of the grid's cells, once (popularity's too: a file of its counts)."""
        models = {
            model.folder: model
            for cell in self.cells()
            for model in self.cell_models(cell).values()
        }
        return list(models.values())

    def trained_models(self) -> list[TrainedModel]:
        """Every model the grid trains (popularity does not)."""
        return [m for m in self.models() if method_spec(m.method).trains_on != "nothing"]

    def cell_model(self, dataset: str, reranker: str, mode: str, retriever: str, seed) -> str:
        check_cell(reranker, mode, retriever)
        source = self.training_source(reranker, mode, retriever)
        return self.reranker_model(dataset, reranker, source, int(seed)).model

    def cell_candidates(self, dataset: str, reranker: str, mode: str, retriever: str, seed) -> str:
        check_cell(reranker, mode, retriever)
        if mode == "ground_truth":
            return GROUND_TRUTH.format(dataset=dataset, seed=seed)
        return RETRIEVAL.format(dataset=dataset, retriever=retriever, seed=seed) + "/retrieved.csv"

    # ---- what jobs read ------------------------------------------------------------------

    def method_inputs(self, dataset: str, method: str, seed) -> dict[str, str]:
        """What a method's jobs read beside the dataset's standard files: its item features
        (``<modality>_features``), the generated item texts (``generated_<column>``), the
        images folder, its sources' exported lists (``retrieved_<source>``) and a checkpoint
        folder that a rule writes (``checkpoint``)."""
        spec = method_spec(method)
        texts = {f"generated_{c}": f"{DATA}/{ITEM_TEXT_FILES[c]}" for c in spec.item_texts}
        images = {"images": IMAGES} if spec.images else {}
        local = {key: path.format(dataset=dataset) for key, path in {**texts, **images}.items()}
        model_name = self.model_params(method).get("model_name", "")
        return {
            **self.feature_files(dataset, method),
            **local,
            **self.list_inputs(dataset, method, seed),
            **checkpoint_input(model_name),
            **hub_input(model_name),
        }

    def reranker_training_inputs(
        self, dataset: str, reranker: str, source: str, seed
    ) -> dict[str, str]:
        """The dataset, what the reranker reads and, for one that trains on candidates, its
        source's lists: validation on their val split, training on their train split, or on
        the target plus random negatives with ``rerank.train_candidates: random`` (LlamaRec).
        Source ground_truth (see :meth:`training_source`) has the random lists for both."""
        inputs = {**data_files(dataset), **self.method_inputs(dataset, reranker, seed)}
        if method_spec(reranker).trains_on == "candidates":
            ground_truth = GROUND_TRUTH.format(dataset=dataset, seed=seed)
            retrieved = RETRIEVAL.format(dataset=dataset, retriever=source, seed=seed)
            lists = ground_truth if source == "ground_truth" else f"{retrieved}/retrieved.csv"
            random = self.config["rerank"]["train_candidates"] == "random"
            inputs["validation_candidates"] = lists
            inputs["training_candidates"] = ground_truth if random else lists
        return inputs

    def list_inputs(self, dataset: str, method: str, seed) -> dict[str, str]:
        """The exported lists of the sources of a method that reads them (fusion, ltr:
        ``methods.<name>.model.sources``), as named inputs ``retrieved_<source>``: each source
        is one of the grid's retrievers, trained with the same seed."""
        if not method_spec(method).reads_lists:
            return {}
        sources = list(self.model_params(method).get("sources", []))
        unknown = [s for s in sources if s not in self.retrievers or s == method]
        if unknown:
            raise ValueError(
                f"methods.{method}.model.sources names {unknown}, which are not other "
                f"retrievers of this config ({self.retrievers}): {method} reads the lists "
                "they export, so add them to retrievers"
            )
        return {
            f"retrieved_{source}": RETRIEVAL.format(dataset=dataset, retriever=source, seed=seed)
            + "/retrieved.csv"
            for source in sources
        }

    def modalities(self, dataset: str) -> list[str]:
        """The item features a dataset provides, by its settings."""
        spec = self.config["datasets"][dataset]
        provided = {
            "image": spec["use_image"],
            "text": spec["use_text"],
            "attributes": "attributes" in spec,
        }
        return [modality for modality in MODALITIES if provided[modality]]

    def feature_files(self, dataset: str, method: str) -> dict[str, str]:
        """The feature files a method reads (its registry entry's features that the dataset
        provides), as named inputs ``<modality>_features``."""
        spec = method_spec(method)
        wanted = spec.features
        if not wanted:
            return {}
        chosen = [m for m in self.modalities(dataset) if m in wanted]
        if not chosen and spec.needs_features:
            options = "; or ".join(f"{m}: datasets.{dataset}.{FEATURE_SOURCES[m]}" for m in wanted)
            raise ValueError(
                f"{method} needs item features and dataset {dataset} provides none. "
                f"Enable one in the config: {options}"
            )
        return {f"{m}_features": FEATURES.format(dataset=dataset, feature=m) for m in chosen}

    def raw_files(self, dataset: str) -> dict[str, str]:
        """The raw files a dataset is prepared from, by role (``seqrerank.data.prepare.RawFiles``):
        local paths from the config, files the download_raw rule fetches (their Amazon names say
        their role), the demo's generated files, and the item images: a local ``images_dir``,
        or those the download_images rule fetches from the metadata's image URLs."""
        spec = self.config["datasets"][dataset]
        raw = RAW.format(dataset=dataset)
        if spec["source"] == "synthetic":
            return {
                "ratings": f"{raw}/ratings_{DEMO_CATEGORY}.csv",
                "meta": f"{raw}/meta_{DEMO_CATEGORY}.json.gz",
                "images": f"{raw}/{IMAGES_FOLDER}",
            }
        if spec["source"] == "sequences":
            files = {"sequences": spec["path"]}
        else:
            files = {key: spec[key] for key in ("ratings", "reviews", "meta") if key in spec}
            for name in spec.get("download", {}):
                files[name.split("_", 1)[0]] = f"{raw}/{name}"
        if "attributes" in spec:
            files["attributes"] = spec["attributes"]
        if spec.get("images_dir"):
            files["images"] = spec["images_dir"]
        elif spec["use_image"] and spec["source"] == "amazon":
            files["images"] = f"{raw}/{IMAGES_FOLDER}"
        return files

    def sources_of(self, kind: str) -> list[str]:
        """The datasets of a source kind (``synthetic``, ``amazon``, ``sequences``)."""
        return [d for d in self.datasets if self.config["datasets"][d]["source"] == kind]

    def feature_models(self, feature: str) -> list[str]:
        """The pretrained encoders of an item feature (none for attributes)."""
        settings = self.config["features"]
        clip = clip_model_id(settings["clip_model"], settings["clip_pretrained"])
        if feature == "image" or (feature == "text" and settings["text_encoder"] == "clip"):
            return [clip] if clip else []
        if feature == "text":
            return [settings["sentence_model"]] if settings["sentence_model"] else []
        return []

    def hub_models(self) -> list[str]:
        """Every model from the hub that a job of the grid loads: what the download_models rule
        fetches into the model cache before any GPU job starts."""
        names = [self.model_params(m).get("model_name") for m in self.retrievers + self.rerankers]
        texts = {c for m in self.rerankers for c in method_spec(m).item_texts}
        if "caption" in texts:
            names.append(self.config["captions"]["model_name"])
        for small in (False, True):
            if f"semantic_summary{'_small' if small else ''}" in texts:
                names.append(self.summary_settings(small)["model_name"])
        used = {f for d in self.datasets for m in self.retrievers + self.rerankers
                for f in self.feature_files(d, m)}  # fmt: skip
        for feature in sorted(MODALITIES):
            if f"{feature}_features" in used:
                names += self.feature_models(feature)
        return sorted({name for name in names if is_hub_id(name)})

    def bind_paths(self) -> list[str]:
        """The folders outside the working directory that jobs read: those of the data files
        the config names, and the model cache. An Apptainer job sees only the working
        directory unless they are bound; only folders that exist can be."""
        files = ("ratings", "reviews", "meta", "path", "attributes")
        specs = self.config["datasets"].values()
        folders = {Path(spec[key]).parent for spec in specs for key in files if key in spec}
        folders |= {Path(spec["images_dir"]) for spec in specs if spec.get("images_dir")}
        folders.add(Path(self.model_cache()))
        folders = {str(folder.expanduser().resolve()) for folder in folders}
        return sorted(folder for folder in folders if Path(folder).is_dir())

    def model_cache(self) -> str:
        """Where the hub models are kept: config ``model_cache``, else the user's HF_HOME."""
        return self.config["model_cache"] or default_cache()

    def summary_settings(self, small: bool) -> dict[str, Any]:
        """Settings of the semantic-summary rule: the main summariser model, or the small one."""
        settings = dict(self.config["semantic_summaries"])
        small_model = settings.pop("small_model_name")
        return {**settings, "model_name": small_model} if small else settings

    # ---- settings ------------------------------------------------------------------------

    def model_params(self, method: str) -> dict[str, Any]:
        return model_params(self.config, method)

    def training_settings(self, stage: str, method: str) -> dict[str, Any]:
        return training_settings(self.config, stage, method)

    # ---- what jobs ask of a cluster ------------------------------------------------------

    def requested(self, rule: str, method: str | None = None) -> dict[str, Any]:
        """``resources.<rule>`` of the config, overridden for a method's jobs by
        ``methods.<method>.resources`` (so BERT4Rec and an LLM in the same rule get their own
        GPUs, memory and time)."""
        chosen = dict(self.config["resources"].get(rule, {}))
        if method is not None:
            chosen.update(self.config["methods"].get(method, {}).get("resources", {}))
        return chosen

    def threads(self, rule: str, method: str | None = None, default: int = 1) -> int:
        return self.requested(rule, method).get("threads", default)

    def resources(
        self, rule: str, method: str | None = None, *, mem_mb: int = 2000, runtime: int = 60
    ) -> dict[str, Any]:
        """A job's resources in the names of Snakemake and its SLURM executor: memory, time,
        GPUs (``gpu``, with ``gpu_model`` if set) and, for a job on several nodes, one task per
        node that starts torchrun itself (``mpi: srun``: the executor leaves the command alone;
        its GPUs asked per node as GRES; ``tasks_per_gpu: 0`` stops the executor from reading
        ``tasks`` as tasks per GPU). The partition is the executor's choice (its partition
        file picks the GPU partition for a job with GPUs), the account the user's."""
        chosen = {"mem_mb": mem_mb, "runtime": runtime, "gpu": 0, **self.requested(rule, method)}
        chosen.pop("threads", None)
        gpus, nodes = chosen["gpu"], chosen.pop("nodes", 1)
        if (gpus > 1 or nodes > 1) and rule not in SEVERAL_GPUS:
            raise ValueError(
                f"resources.{rule}: {rule} runs on one GPU of one node; only "
                f"{' and '.join(SEVERAL_GPUS)} take several (gpu > 1, nodes > 1)"
            )
        if nodes > 1:
            if not gpus:
                raise ValueError(f"resources.{rule}: nodes > 1 needs gpu (GPUs per node)")
            model = f"{chosen.pop('gpu_model')}:" if "gpu_model" in chosen else ""
            del chosen["gpu"]
            chosen |= dict(
                nodes=nodes, tasks=nodes, tasks_per_gpu=0, mpi="srun", gres=f"gpu:{model}{gpus}"
            )
        return chosen

    def processes(self, rule: str, method: str) -> dict[str, int]:
        """The processes of a train_reranker or rerank job (seqrerank.distributed): one per GPU
        on each node. A reranker with ``backend: vllm`` runs in one process, where vLLM spreads
        the model over the job's GPUs itself (``tensor_parallel_size``)."""
        chosen = self.requested(rule, method)
        several = {"per_node": max(chosen.get("gpu", 0), 1), "nodes": chosen.get("nodes", 1)}
        if self.model_params(method).get("backend") != "vllm":
            return several
        if several["nodes"] > 1:
            raise ValueError(f"resources.{rule}: backend vllm runs on one node")
        return {"per_node": 1, "nodes": 1}


def check_cell(reranker: str, mode: str, retriever: str) -> None:
    if (mode == "ground_truth") != (retriever == "none"):
        raise ValueError(
            "ground_truth cells do not depend on a retriever and retrieval cells need one: "
            f"use rerank/{reranker}/ground_truth/none/... or "
            f"rerank/{reranker}/retrieval/<retriever>/..., not {mode}/{retriever}"
        )


def data_files(dataset: str) -> dict[str, str]:
    """The prepared dataset's files, by input/output name ("items" is reserved by Snakemake)."""
    return {
        "item_table" if role == "items" else role: f"{DATA}/{name}".format(dataset=dataset)
        for role, name in DATASET_FILES.items()
    }


def checkpoint_input(model_name: str) -> dict[str, str]:
    """A model that a rule of the workflow writes (the demo's tiny models) as a named input, so
    that it is written first; a hub id or a path of the user's needs nothing."""
    return {"checkpoint": model_name} if model_name.startswith(TINY_MODEL.split("{")[0]) else {}


def hub_input(*model_names: str | None) -> dict[str, str]:
    """The download_models rule's output as a named input of a job that loads a model from the
    hub, so that the model is in the cache before the job (offline) starts."""
    return {"hub_models": HUB_MODELS} if any(is_hub_id(name) for name in model_names) else {}
