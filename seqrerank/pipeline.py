"""The workflow's steps as plain functions: each workflow script unpacks Snakemake's inputs,
outputs and params and calls one of these, so every step also runs (and is tested) without
Snakemake. The reranker steps also run in several processes (:func:`seqrerank.distributed.launch`):
then every rank computes and rank 0 writes the outputs."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from seqrerank import distributed
from seqrerank.candidates import (
    CandidateTraining,
    RankedLists,
    read_ranked_lists,
    sample_ground_truth,
    write_ranked_lists,
)
from seqrerank.data.dataset import (
    EVAL_SPLITS,
    SPLITS,
    SequenceData,
    dataset_files,
    load_sequences,
)
from seqrerank.evaluation import evaluate, rerank, retrieve
from seqrerank.features import load_feature_files
from seqrerank.io import atomic_path, content_digest, write_json
from seqrerank.methods.base import Recommender, check_params
from seqrerank.metrics import format_metrics_table, metrics_from_ranks, target_ranks
from seqrerank.registry import load_method, method_spec
from seqrerank.training import TrainSettings, fit, seed_everything

log = logging.getLogger("seqrerank")


def build_model(
    method: str,
    data: SequenceData,
    data_dir: Path,
    params: dict[str, Any],
    seed: int,
    features: Mapping[str, Path] | None = None,
) -> Recommender:
    """``features``: the item feature files (by modality) of the method's registry entry."""
    cls = load_method(method)
    check_params(cls, params, where=f"config methods.{method}.model")
    loaded = load_feature_files(features or {}, data.num_items)
    seed_everything(seed)
    return cls.from_data(data, Path(data_dir), features=loaded, **params)


def save_model(model: Recommender, method: str, params: dict[str, Any], path: Path) -> None:
    with atomic_path(path) as tmp:
        weights = {name: value.cpu() for name, value in model.state_dict().items()}
        torch.save({"method": method, "params": params, "state_dict": weights}, tmp)


def load_model(
    path: Path, data: SequenceData, data_dir: Path, features: Mapping[str, Path] | None = None
) -> Recommender:
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(saved["method"], data, data_dir, saved["params"], seed=0, features=features)
    model.load_state_dict(saved["state_dict"])
    return model.eval()


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


def train(
    method: str,
    data_dir: Path,
    params: dict[str, Any],
    settings: TrainSettings,
    checkpoint_dir: Path,
    features: Mapping[str, Path] | None = None,
    candidates: RerankCandidates | None = None,
) -> tuple[Recommender, SequenceData, list[dict]]:
    """Build and train a method on a prepared dataset. It validates by full ranking on val, or,
    when it trains on ``candidates``, by reranking the val candidates."""
    data = load_sequences(data_dir)
    model = build_model(method, data, data_dir, params, settings.seed, features)
    history: list[dict] = []
    if not model.trainable:
        return model, data, history
    read = [*dataset_files(data_dir), *(features or {}).values()]
    if candidates is not None:
        read += [candidates.training, candidates.validation]
    inputs = json.dumps([method, params, content_digest(read)], sort_keys=True)
    if method_spec(method).trains_on == "candidates":
        if candidates is None:
            raise ValueError(f"{method} trains on candidate lists, but none were given")
        train_lists = read_ranked_lists(candidates.training)["train"].head(candidates.top_k)
        val_lists = read_ranked_lists(candidates.validation)["val"].head(candidates.top_k)
        examples: SequenceData | CandidateTraining = CandidateTraining(data, train_lists)
        validate = lambda m: evaluate(rerank(m, data, val_lists))  # noqa: E731
    else:
        examples = data
        validate = lambda m: evaluate(retrieve(m, data, "val", top_k=20))  # noqa: E731
    history = fit(model, examples, settings, checkpoint_dir, validate, inputs)
    return model, data, history


def run_retriever(
    method: str,
    data_dir: Path,
    params: dict[str, Any],
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
) -> dict:
    """Stage 1: train, then export the top-``top_k`` candidates of every user for the train,
    val and test tasks, with the val/test metrics."""
    use_threads(threads)
    model, data, history = train(method, data_dir, params, settings, checkpoint_dir, features)
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
    data_dir: Path,
    params: dict[str, Any],
    settings: TrainSettings,
    *,
    model_path: Path,
    history_path: Path,
    checkpoint_dir: Path,
    features: Mapping[str, Path] | None = None,
    candidates: RerankCandidates | None = None,
    threads: int | None = None,
) -> None:
    use_threads(threads)
    model, _, history = train(
        method, data_dir, params, settings, checkpoint_dir, features, candidates
    )
    if distributed.is_main():
        save_model(model, method, params, model_path)
        write_json(history_path, history)


def write_ground_truth(data_dir: Path, num_negatives: int, seed: int, out_path: Path) -> None:
    data = load_sequences(data_dir)
    write_ranked_lists(
        out_path, [sample_ground_truth(data, split, num_negatives, seed) for split in SPLITS]
    )


def run_rerank(
    data_dir: Path,
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
) -> dict:
    """Stage 2: rerank the first ``top_k`` candidates of every val/test user."""
    use_threads(threads)
    data = load_sequences(data_dir)
    model = load_model(model_path, data, data_dir, features)
    candidates = read_ranked_lists(candidates_path)
    lists = [rerank(model, data, candidates[split].head(top_k)) for split in EVAL_SPLITS]
    metrics = {part.split: cell_metrics(part) for part in lists}
    if distributed.is_main():
        write_ranked_lists(reranked_path, lists)
        write_ranks(ranks_path, lists)
        write_json(metrics_path, metrics)
        log_metrics(label, metrics)
    return metrics


def cell_metrics(lists: RankedLists) -> dict:
    """Metrics over all users (a target missing from the list is a miss), and over the users
    whose target is in the list (``conditional``), which isolates the reranker's own quality."""
    ranks = target_ranks(lists.items, lists.targets)
    found = ranks > 0
    return {
        **metrics_from_ranks(ranks),
        "users": len(ranks),
        "target_in_list": int(found.sum()),
        "conditional": metrics_from_ranks(ranks[found]),
    }


def write_ranks(path: Path, lists: list[RankedLists]) -> None:
    """Per-user rank of the target (0 = not in the list), for significance tests."""
    frame = pd.concat(
        pd.DataFrame(
            {
                "split": part.split,
                "user": part.users,
                "rank": target_ranks(part.items, part.targets),
            }
        )
        for part in lists
    )
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def log_metrics(label: str, metrics: dict) -> None:
    for split, values in metrics.items():
        table = format_metrics_table(values)
        log.info("%s, %s (%d users):\n%s", label, split, values["users"], table)
        print(f"{label} - {split}\n{table}\n", file=sys.stdout, flush=True)
