"""LRURec and BERT4Rec on the real Amazon Beauty sequences, trained with the settings of
config/beauty.yaml (those the workflow uses): seconds per epoch, full-ranking throughput, peak
memory, and val/test metrics beside LlamaRec's published Beauty figures. BERT4Rec, a reranker in the
workflow, is measured here by full ranking, as LlamaRec reports it.

Each model trains in a fresh process, so its peak memory is its own. Without ../shared it runs
on the built-in demo data with config/demo.yaml's settings (same code path, smaller numbers).
Environment variables: BENCH_EPOCHS and BENCH_PATIENCE override the config's epochs and patience
(for a quick run; the published comparison needs the config's); BENCH_DATASET=demo runs on the
demo data even where Beauty is present (a quick check of the code).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from benchmarks.common import (
    BENCH_RESULTS,
    REPO,
    Timer,
    bench_dataset,
    environment,
    epoch_budget,
    in_fresh_process,
    peak_rss_mb,
    prepared_dataset,
)
from seqrerank.config import load_config, model_params, training_settings
from seqrerank.evaluation import evaluate, retrieve
from seqrerank.io import read_json, write_json
from seqrerank.pipeline import train
from seqrerank.training import TrainSettings

# LlamaRec (Yue et al. 2023), Table 1, Amazon Beauty, full ranking with the history masked.
PUBLISHED = {
    "lrurec": {"ndcg@5": 0.0435, "recall@5": 0.0614, "ndcg@10": 0.0533, "recall@10": 0.0916},
    "bert4rec": {"ndcg@5": 0.0298, "recall@5": 0.0457, "ndcg@10": 0.0372, "recall@10": 0.0686},
}
# Each model and the config stage whose training settings it uses.
MODELS = {"lrurec": "retrieval", "bert4rec": "rerank"}
# Full ranking to the depth the metrics read (20), that config/beauty.yaml exports to Stage 2
# (100), and deeper.
RANKING_DEPTHS = (20, 100, 200)
REPORTED = ("ndcg@5", "recall@5", "ndcg@10", "recall@10", "ndcg@20", "recall@20")


def config_settings(dataset: str, method: str) -> tuple[dict, TrainSettings]:
    """The model parameters and training settings of ``method`` in the workflow's config."""
    config = load_config(REPO / "config" / f"{dataset}.yaml")
    settings = training_settings(config, MODELS[method], method)
    settings.update(epoch_budget(settings["epochs"], settings["patience"]))
    return model_params(config, method), TrainSettings(**settings, seed=config["seeds"][0])


def benchmark_retriever(
    name: str,
    params: dict,
    dataset: str,
    settings: TrainSettings,
    features: dict[str, Path] | None = None,
) -> dict:
    """Train ``name`` from scratch and measure it; ``features``: its item feature files."""
    torch.set_num_threads(os.cpu_count() or 1)
    checkpoints = BENCH_RESULTS / dataset / name / "checkpoints"
    shutil.rmtree(checkpoints, ignore_errors=True)  # a benchmark measures a fresh run
    model, data, history = train(
        name, prepared_dataset(dataset), params, settings, checkpoints, features
    )
    ranking_seconds = {}
    for depth in RANKING_DEPTHS:  # the deepest last: its lists give the metrics
        with Timer() as ranking:
            lists = retrieve(model, data, "test", top_k=depth)
        ranking_seconds[depth] = ranking.seconds
    test = evaluate(lists)
    val = next(h["val"] for h in history if h["epoch"] == best_epoch(history))
    epoch_seconds = [h["train_seconds"] for h in history]
    return {
        "val": val,
        "test": test,
        "epochs_run": len(history),
        "best_epoch": best_epoch(history),
        "seconds_per_epoch": sum(epoch_seconds) / len(epoch_seconds),
        "full_ranking_seconds": ranking_seconds,
        "users": data.num_users,
        "items": data.num_items,
        "peak_rss_mb": peak_rss_mb(),
        "params": params,
        "settings": vars(settings),
        "environment": environment(),
    }


def best_epoch(history: list[dict]) -> int:
    return [h["epoch"] for h in history if h["best"]][-1]


def ranking_times(seconds: dict) -> str:
    """Full-ranking seconds by depth, as printed."""
    return ", ".join(f"top {depth}: {t:.2f} s" for depth, t in seconds.items())


def print_report(dataset: str, results: dict) -> None:
    print(f"\n== Sequential models, full ranking, on {dataset} ({environment()}) ==")
    for name, r in results.items():
        print(
            f"{name}: {r['seconds_per_epoch']:.1f} s/epoch over {r['epochs_run']} epochs "
            f"(best {r['best_epoch']}), peak RSS {r['peak_rss_mb']:.0f} MB"
        )
        print(
            f"  full ranking of {r['users']} users x {r['items']} items: "
            + ranking_times(r["full_ranking_seconds"])
        )
        header = "".join(f"{m:>11}" for m in REPORTED)
        print(f"  {'':<22}{header}")
        print(f"  {'ours (test)':<22}" + "".join(f"{r['test'][m]:>11.4f}" for m in REPORTED))
        if dataset == "beauty" and name in PUBLISHED:
            row = "".join(
                f"{PUBLISHED[name][m]:>11.4f}" if m in PUBLISHED[name] else f"{'-':>11}"
                for m in REPORTED
            )
            print(f"  {'LlamaRec paper':<22}{row}")


def main() -> None:
    dataset = bench_dataset()
    results = {}
    for method in MODELS:
        params, settings = config_settings(dataset, method)
        results[method] = in_fresh_process(benchmark_retriever, method, params, dataset, settings)
    print_report(dataset, results)
    out = BENCH_RESULTS / f"{dataset}.json"
    merged = read_json(out) if out.exists() else {}
    merged.update(results)
    write_json(out, merged)
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
