"""The workflow's steps as plain functions: each workflow script unpacks Snakemake's inputs,
outputs and params and calls one of these, so every step also runs (and is tested) without
Snakemake. A step is handed exactly the files its rule declares (:class:`DatasetFiles`, feature
files by modality, candidate lists) and reads nothing else. The reranker steps also run in
several processes (:func:`seqrerank.distributed.launch`): then every rank computes and rank 0
writes the outputs."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from seqrerank import distributed
from seqrerank.candidates import (
    CandidateTraining,
    RankedLists,
    load_retrieved,
    read_ranked_lists,
    sample_ground_truth,
    write_ranked_lists,
    write_ranks,
)
from seqrerank.data.dataset import (
    EVAL_SPLITS,
    SPLITS,
    DatasetFiles,
    SequenceData,
    as_dataset_files,
    load_items,
    load_sequences,
)
from seqrerank.data.images import ItemImages
from seqrerank.evaluation import cell_metrics, evaluate, rerank, retrieve
from seqrerank.features import load_feature_files
from seqrerank.io import atomic_path, content_digest, write_json
from seqrerank.methods.base import Recommender
from seqrerank.metrics import format_metrics_table
from seqrerank.model_files import build_model, load_model, save_model
from seqrerank.registry import method_spec
from seqrerank.training import TrainSettings, fit

log = logging.getLogger("seqrerank")


def use_threads(threads: int | None) -> None:
    """Match torch's thread pool to the cores the job was given (Snakemake/SLURM ``threads``),
    which its processes on a node share."""
    if threads:
        torch.set_num_threads(max(1, threads // distributed.processes_on_this_node()))


@dataclass(frozen=True)
class RerankCandidates:
    """The candidate lists a reranker that trains on candidates learns from: ``training``
    (its ``train`` split) and ``validation`` (its ``val`` split), the first ``top_k`` of each."""

    training: Path
    validation: Path
    top_k: int


def method_inputs(
    dataset: DatasetFiles,
    data: SequenceData,
    features: Mapping[str, Path] | None,
    retrieved: Mapping[str, Path] | None = None,
) -> dict[str, Any]:
    """What a method may read beside the sequences, loaded: the item table (with the generated
    texts the dataset files name), the item features, the images when their folder is given,
    and other models' exported lists (``retrieved``: source name -> its ``retrieved.csv``)."""
    items = load_items(dataset)
    images = ItemImages(dataset.images, items) if dataset.images else None
    return {
        "items": items,
        "features": load_feature_files(features or {}, data.num_items),
        "images": images,
        "retrieved": load_retrieved(retrieved or {}),
    }


def _candidate_lists(
    method: str, candidates: RerankCandidates | None
) -> tuple[RankedLists, RankedLists]:
    """The ``train``-task lists a reranker learns from and the ``val``-task lists it is
    validated on, the first ``top_k`` of each."""
    if candidates is None:
        raise ValueError(f"{method} trains on candidate lists, but none were given")
    training = read_ranked_lists(candidates.training)
    # Usually one file holds both (a retriever's lists, or the ground-truth ones): read it once.
    same = Path(candidates.validation) == Path(candidates.training)
    validation = training if same else read_ranked_lists(candidates.validation)
    return (
        training["train"].head(candidates.top_k),
        validation["val"].head(candidates.top_k),
    )


def train(
    method: str,
    dataset: DatasetFiles | str | Path,
    params: Mapping[str, Any],
    settings: TrainSettings,
    checkpoint_dir: Path,
    features: Mapping[str, Path] | None = None,
    candidates: RerankCandidates | None = None,
    retrieved: Mapping[str, Path] | None = None,
) -> tuple[Recommender, SequenceData, list[dict]]:
    """Build and train a method on a prepared dataset. It validates by full ranking on val, or,
    when it trains on ``candidates``, by reranking the val candidates. A checkpoint is resumed
    only for the same content of everything read here, the same parameters and settings. A
    method that trains itself on the candidate lists (``trains_itself``) does so without the
    shared loop, and without checkpoints (it trains in minutes)."""
    dataset = as_dataset_files(dataset)
    data = load_sequences(dataset)
    inputs = method_inputs(dataset, data, features, retrieved)
    model = build_model(method, data, params, settings.seed, **inputs)
    history: list[dict] = []
    if model.trains_itself:
        train_lists, val_lists = _candidate_lists(method, candidates)
        return model, data, model.fit_lists(data, train_lists, val_lists, settings)
    if not model.trainable:
        return model, data, history
    read = [*dataset.all(), *(features or {}).values(), *(retrieved or {}).values()]
    if candidates is not None:
        read += [candidates.training, candidates.validation]
    identity = json.dumps([method, dict(params), content_digest(read)], sort_keys=True)
    if method_spec(method).trains_on == "candidates":
        train_lists, val_lists = _candidate_lists(method, candidates)
        examples: SequenceData | CandidateTraining = CandidateTraining(data, train_lists)
        validate = lambda m: evaluate(rerank(m, data, val_lists))  # noqa: E731
    else:
        examples = data
        validate = lambda m: evaluate(retrieve(m, data, "val", top_k=20))  # noqa: E731
    history = fit(model, examples, settings, checkpoint_dir, validate, identity)
    return model, data, history


def run_retriever(
    method: str,
    dataset: DatasetFiles,
    params: Mapping[str, Any],
    settings: TrainSettings,
    top_k: int,
    *,
    model_path: Path,
    history_path: Path,
    candidates_path: Path,
    metrics_path: Path,
    ranks_path: Path,
    checkpoint_dir: Path,
    features: Mapping[str, Path] | None = None,
    threads: int | None = None,
    retrieved: Mapping[str, Path] | None = None,
) -> dict:
    """Stage 1: train, then export the top-``top_k`` candidates of every user for the train,
    val and test tasks, with the val/test metrics. ``retrieved``: the exported lists of the
    sources of a method that ``reads_lists`` (``fusion``), by source name."""
    use_threads(threads)
    model, data, history = train(
        method, dataset, params, settings, checkpoint_dir, features, retrieved=retrieved
    )
    lists = [retrieve(model, data, split, top_k) for split in SPLITS]
    metrics = {part.split: cell_metrics(part) for part in lists if part.split in EVAL_SPLITS}
    save_model(model, method, params, model_path)
    write_json(history_path, history)
    write_ranked_lists(candidates_path, lists)
    write_ranks(ranks_path, [part for part in lists if part.split in EVAL_SPLITS])
    write_json(metrics_path, metrics)
    log_metrics(f"{method} (Stage 1)", metrics)
    return metrics


def run_reranker_training(
    method: str,
    dataset: DatasetFiles,
    params: Mapping[str, Any],
    settings: TrainSettings,
    *,
    model_path: Path,
    history_path: Path,
    checkpoint_dir: Path,
    features: Mapping[str, Path] | None = None,
    candidates: RerankCandidates | None = None,
    threads: int | None = None,
    retrieved: Mapping[str, Path] | None = None,
    importance_path: Path | None = None,
) -> None:
    """Train a reranker and save it. ``retrieved``: the exported lists of its sources, for a
    method that ``reads_lists`` (``ltr``); ``importance_path``: where a method that reports
    feature importances (``ltr``) writes them (CSV: feature, gain, splits), others write
    nothing."""
    use_threads(threads)
    model, _, history = train(
        method, dataset, params, settings, checkpoint_dir, features, candidates, retrieved
    )
    if distributed.is_main():
        save_model(model, method, params, model_path)
        write_json(history_path, history)
        importance = getattr(model, "feature_importance", None)
        if importance_path is not None and importance is not None:
            with atomic_path(importance_path) as tmp:
                importance().to_csv(tmp, index=False)


def run_export(
    dataset: DatasetFiles | str | Path,
    model_path: Path,
    top_k: int,
    *,
    candidates_path: Path,
    features: Mapping[str, Path] | None = None,
    threads: int | None = None,
) -> None:
    """The top-``top_k`` lists of the train, val and test tasks of a trained full-ranking model
    that is not a retriever of the grid (BERT4Rec, trained on sequences as a reranker), written
    like a retriever's ``retrieved.csv``, so that ``fusion`` and ``ltr`` can read it as a
    source."""
    use_threads(threads)
    dataset = as_dataset_files(dataset)
    data = load_sequences(dataset)
    model = load_model(model_path, data, **method_inputs(dataset, data, features))
    lists = [retrieve(model, data, split, top_k) for split in SPLITS]
    if distributed.is_main():
        write_ranked_lists(candidates_path, lists)


def write_ground_truth(
    dataset: DatasetFiles | str | Path, num_negatives: int, seed: int, out_path: Path
) -> None:
    data = load_sequences(dataset)
    write_ranked_lists(
        out_path, [sample_ground_truth(data, split, num_negatives, seed) for split in SPLITS]
    )


def run_rerank(
    dataset: DatasetFiles,
    model_path: Path,
    candidates_path: Path,
    top_k: int,
    *,
    reranked_path: Path,
    metrics_path: Path,
    ranks_path: Path,
    label: str,
    features: Mapping[str, Path] | None = None,
    threads: int | None = None,
    retrieved: Mapping[str, Path] | None = None,
) -> dict:
    """Stage 2: rerank the first ``top_k`` candidates of every val/test user. ``retrieved``: the
    exported lists of the reranker's sources, for one that ``reads_lists`` (``ltr``)."""
    use_threads(threads)
    data = load_sequences(dataset)
    model = load_model(model_path, data, **method_inputs(dataset, data, features, retrieved))
    candidates = read_ranked_lists(candidates_path)
    lists = [rerank(model, data, candidates[split].head(top_k)) for split in EVAL_SPLITS]
    metrics = {part.split: cell_metrics(part) for part in lists}
    if distributed.is_main():
        write_ranked_lists(reranked_path, lists)
        write_ranks(ranks_path, lists)
        write_json(metrics_path, metrics)
        log_metrics(label, metrics)
    return metrics


def log_metrics(label: str, metrics: dict) -> None:
    for split, values in metrics.items():
        table = format_metrics_table(values)
        log.info("%s, %s (%d users):\n%s", label, split, values["users"], table)
        print(f"{label} - {split}\n{table}\n", file=sys.stdout, flush=True)
