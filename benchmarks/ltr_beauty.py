"""The learning-to-rank reranker on the real Amazon Beauty sequences, against LRURec alone.

Reads what the workflow trained with config/beauty.yaml (``--results``, default
``results/beauty_5core``): the prepared data, LRURec's exported lists
(``retrieval/lrurec/seed<seed>/retrieved.csv``) and BERT4Rec's model
(``rerank/bert4rec/trained_on_sequences/seed<seed>/model.pt``), and writes nothing there. Per
seed, with the pipeline's own steps (what the workflow's jobs run), under
``results/bench/ltr/seed<seed>/``:

1. BERT4Rec's top-K lists of the train, val and test tasks (``run_export``), popularity's
   (``run_retriever``), and the fusion of the sources (``run_retriever("fusion")``);
2. the ``ltr`` reranker trained on the candidate source's train-task lists, early-stopped on its
   val-task lists (``run_reranker_training``), with the items' attribute features (Beauty's
   brand and category ids, ``Beauty_item2attributes.json``; the data of the workflow has no
   attributes column, so they come from a copy prepared with them and checked to be the same
   data);
3. the reranking of the val (and, with ``--test``, test) lists (``run_rerank``).

It prints the LTR's training time, its scoring throughput (users/s, features included) and the
metrics beside LRURec's and the fusion's; with ``--test`` also the test metrics with the paired
randomization test of the per-user NDCG@10 against LRURec, and the mean ± std over seeds.
Tune on validation (the default); read the test split once per final configuration.

    python -m benchmarks.ltr_beauty --results ../wt-beauty/results/beauty_5core --seeds 43 44
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import BEAUTY, BENCH_RESULTS, REPO, environment, peak_rss_mb
from seqrerank.candidates import RankedLists, read_ranked_lists
from seqrerank.data.dataset import DATASET_FILES, DatasetFiles, load_sequences
from seqrerank.data.prepare import prepare_dataset
from seqrerank.encoders import FeatureSettings, build_item_features
from seqrerank.evaluation import cell_metrics, rerank
from seqrerank.io import write_json
from seqrerank.metrics import per_user_metrics, target_ranks
from seqrerank.model_files import load_model
from seqrerank.pipeline import (
    RerankCandidates,
    method_inputs,
    run_export,
    run_rerank,
    run_reranker_training,
    run_retriever,
)
from seqrerank.significance import paired_randomization_test
from seqrerank.training import TrainSettings

OUT = BENCH_RESULTS / "ltr"
REPORTED = ("ndcg@5", "recall@5", "ndcg@10", "recall@10", "ndcg@20", "recall@20")
# LlamaRec (Yue et al. 2023), Table 1: LRURec -> Llama-2-7B on LRURec's top 20.
LLAMAREC = {"ndcg@5": 0.0450, "recall@5": 0.0648, "ndcg@10": 0.0554, "recall@10": 0.0971}
STAGE1 = TrainSettings(epochs=1, lr=0.0, batch_size=1, patience=1)  # nothing trains


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=REPO / "results/beauty_5core")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument(
        "--sources",
        default="lrurec,bert4rec,popularity",
        help="the LTR's feature sources and the fusion's, comma-separated",
    )
    parser.add_argument("--fusion", default="lrurec,bert4rec", help="the fusion's sources")
    parser.add_argument("--fusion-weights", default=None, help="comma-separated, one per source")
    parser.add_argument("--fusion-method", default="rrf")
    parser.add_argument("--candidates", default="fusion", help="the list the LTR reranks")
    parser.add_argument("--top-k", type=int, default=50, help="how many candidates it reranks")
    parser.add_argument("--export-k", type=int, default=100, help="depth of exported lists")
    parser.add_argument("--params", default="{}", help="LTR model parameters (JSON)")
    parser.add_argument("--metric", default="ndcg@10", help="the LTR's early-stopping metric")
    parser.add_argument("--no-attributes", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--test", action="store_true", help="also read the test split")
    parser.add_argument("--tag", default="ltr", help="name of this configuration's outputs")
    return parser.parse_args()


def attribute_features(data_dir: Path) -> dict[str, Path]:
    """Beauty's attribute multi-hots for the workflow's prepared data: prepared once more with
    the attributes file (the workflow's beauty config gives none), checked to be the same data,
    then encoded."""
    copy = OUT / "data"
    if not (copy / "stats.json").exists():
        spec = {
            "source": "sequences",
            "path": str(BEAUTY / "Beauty.txt"),
            "attributes": str(BEAUTY / "Beauty_item2attributes.json"),
        }
        prepare_dataset(spec, raw_dir=OUT / "raw", out_dir=copy)
    for role in ("train", "val", "test"):
        name = DATASET_FILES[role]
        if (copy / name).read_bytes() != (data_dir / name).read_bytes():
            raise SystemExit(f"{copy / name} differs from {data_dir / name}: not the same data")
    path = OUT / "features" / "attributes.pt"
    if not path.exists():
        build_item_features("attributes", copy, FeatureSettings(), path)
    return {"attributes": path}


def stage1(
    method: str, dataset: DatasetFiles, params: dict, cell: Path, top_k: int, retrieved=None
) -> Path:
    run_retriever(
        method,
        dataset,
        params,
        STAGE1,
        top_k,
        model_path=cell / "model.pt",
        history_path=cell / "history.json",
        candidates_path=cell / "retrieved.csv",
        metrics_path=cell / "metrics.json",
        ranks_path=cell / "ranks.csv",
        checkpoint_dir=cell / "checkpoints",
        retrieved=retrieved,
    )
    return cell / "retrieved.csv"


def source_files(args, dataset: DatasetFiles, seed: int, names: set[str]) -> dict[str, Path]:
    """Each source's exported lists: the workflow's for its retrievers, exported or computed
    here (once per seed) for BERT4Rec and popularity."""
    out = OUT / f"seed{seed}"
    files = {}
    for name in sorted(names):
        if name == "bert4rec":
            path = out / "bert4rec" / "retrieved.csv"
            if not path.exists():
                model = args.results / f"rerank/bert4rec/trained_on_sequences/seed{seed}/model.pt"
                started = time.perf_counter()
                run_export(dataset, model, args.export_k, candidates_path=path)
                print(f"  bert4rec lists exported in {time.perf_counter() - started:.1f}s")
        elif name == "popularity":
            path = out / "popularity" / "retrieved.csv"
            if not path.exists():
                stage1("popularity", dataset, {}, path.parent, args.export_k)
        else:
            path = args.results / f"retrieval/{name}/seed{seed}/retrieved.csv"
        if not path.exists():
            raise SystemExit(f"{path} does not exist (yet)")
        files[name] = path
    return files


def metrics_of(lists: RankedLists) -> dict:
    return {k: v for k, v in cell_metrics(lists).items() if k in REPORTED or k == "conditional"}


def ndcg10_per_user(lists: RankedLists) -> np.ndarray:
    return per_user_metrics(target_ranks(lists.items, lists.targets), (10,))["ndcg@10"]


def run_seed(args, seed: int, features: dict[str, Path]) -> dict:
    dataset = DatasetFiles.in_folder(args.results / "data")
    sources = [s for s in args.sources.split(",") if s]
    fusion_sources = [s for s in args.fusion.split(",") if s]
    files = source_files(args, dataset, seed, {*sources, *fusion_sources, "lrurec"})
    out = OUT / f"seed{seed}"
    fusion_params = {"sources": fusion_sources, "method": args.fusion_method}
    if args.fusion_weights:
        fusion_params["weights"] = [float(w) for w in args.fusion_weights.split(",")]
    fusion_cell = out / f"fusion_{args.tag}"
    stage1("fusion", dataset, fusion_params, fusion_cell, args.export_k, files)
    lists_of = {"fusion": fusion_cell / "retrieved.csv", **files}
    candidates = lists_of[args.candidates]

    cell = out / args.tag
    if cell.exists():
        shutil.rmtree(cell)
    params = {"sources": sources, **json.loads(args.params)}
    settings = TrainSettings(epochs=1, lr=0.0, batch_size=1, patience=1, seed=seed)
    settings = TrainSettings(**{**settings.__dict__, "metric": args.metric})
    started = time.perf_counter()
    run_reranker_training(
        "ltr",
        dataset,
        params,
        settings,
        model_path=cell / "model.pt",
        history_path=cell / "history.json",
        checkpoint_dir=cell / "checkpoints",
        features=features,
        candidates=RerankCandidates(candidates, candidates, args.top_k),
        retrieved={name: files[name] for name in sources},
        importance_path=cell / "feature_importance.csv",
        threads=args.threads,
    )
    train_seconds = time.perf_counter() - started
    history = json.loads((cell / "history.json").read_text())
    best_round = max(entry["epoch"] for entry in history if entry["best"])

    data = load_sequences(dataset)
    started = time.perf_counter()
    run_rerank(
        dataset,
        cell / "model.pt",
        candidates,
        args.top_k,
        reranked_path=cell / "reranked.csv",
        metrics_path=cell / "metrics.json",
        ranks_path=cell / "ranks.csv",
        label="ltr",
        features=features,
        threads=args.threads,
        retrieved={name: files[name] for name in sources},
    )
    rerank_seconds = time.perf_counter() - started  # both splits, loading included
    # Scoring alone (features and trees, the model and lists already loaded): the val lists.
    retrieved = {name: files[name] for name in sources}
    model = load_model(cell / "model.pt", data, **method_inputs(dataset, data, features, retrieved))
    val_lists = read_ranked_lists(candidates)["val"].head(args.top_k)
    started = time.perf_counter()
    rerank(model, data, val_lists)
    scoring_seconds = time.perf_counter() - started
    reranked = read_ranked_lists(cell / "reranked.csv")
    splits = ("val", "test") if args.test else ("val",)
    # Every source's own full ranking (BERT4Rec's too, as LlamaRec reports it), then the
    # fusion and the LTR.
    rows = {
        **{name: read_ranked_lists(path) for name, path in files.items()},
        "fusion": read_ranked_lists(fusion_cell / "retrieved.csv"),
        "ltr": reranked,
    }
    result = {
        "seed": seed,
        "train_seconds": round(train_seconds, 1),
        "best_round": best_round,
        "rounds": len(history),
        "rerank_job_seconds": round(rerank_seconds, 1),
        "scoring_seconds": round(scoring_seconds, 1),
        "users_per_second": round(data.num_users / scoring_seconds),
        "peak_rss_mb": round(peak_rss_mb()),
    }
    for split in splits:
        result[split] = {name: metrics_of(lists[split]) for name, lists in rows.items()}
    if args.test:
        ltr, lrurec = ndcg10_per_user(reranked["test"]), ndcg10_per_user(rows["lrurec"]["test"])
        result["p_ndcg@10_vs_lrurec"] = paired_randomization_test(ltr, lrurec)
    importance = (cell / "feature_importance.csv").read_text().splitlines()
    result["importance_top"] = importance[1:16]
    return result


def print_seed(result: dict) -> None:
    print(
        f"\n== seed {result['seed']}: LTR trained in {result['train_seconds']}s "
        f"({result['rounds']} rounds, best {result['best_round']}); scores "
        f"{result['users_per_second']} users/s (features and trees; the whole rerank job, "
        f"loading included, {result['rerank_job_seconds']}s for val and test); "
        f"peak {result['peak_rss_mb']} MB"
    )
    print(f"{'':<14}" + "".join(f"{m:>11}" for m in REPORTED) + f"{'cond ndcg@10':>14}")
    for split in ("val", "test"):
        for name, values in result.get(split, {}).items():
            cells = "".join(f"{values[m]:>11.4f}" for m in REPORTED)
            print(f"{name + ' ' + split:<14}{cells}{values['conditional']['ndcg@10']:>14.4f}")
    if "p_ndcg@10_vs_lrurec" in result:
        p_value = result["p_ndcg@10_vs_lrurec"]
        print(f"p (test NDCG@10, LTR vs LRURec, paired randomization): {p_value}")
    print("feature importance (gain):", "; ".join(result["importance_top"][:10]))


def print_summary(results: list[dict]) -> None:
    split = "test" if "test" in results[0] else "val"
    print(f"\n== {split}, mean ± std over seeds {[r['seed'] for r in results]} ==")
    print(f"{'':<10}" + "".join(f"{m:>18}" for m in REPORTED))
    for name in results[0][split]:
        cells = ""
        for m in REPORTED:
            values = np.array([r[split][name][m] for r in results])
            # The sample std, as the comparison table's (none for one seed).
            spread = values.std(ddof=1) if len(values) > 1 else float("nan")
            cells += f"{values.mean():>10.4f} ± {spread:.4f}"
        print(f"{name:<10}{cells}")
    gains = [r[split]["ltr"]["ndcg@10"] / r[split]["lrurec"]["ndcg@10"] - 1 for r in results]
    print(f"LTR vs LRURec, NDCG@10: {100 * np.mean(gains):+.1f}% relative (per seed {gains})")
    if split == "test":
        print("LlamaRec, LRURec -> Llama-2-7B (published):", LLAMAREC)


def main() -> None:
    args = arguments()
    torch.set_num_threads(args.threads)
    features = {} if args.no_attributes else attribute_features(args.results / "data")
    results = []
    for seed in args.seeds:
        result = run_seed(args, seed, features)
        print_seed(result)
        results.append(result)
    print_summary(results)
    write_json(
        OUT / f"{args.tag}.json",
        {
            "settings": vars(args) | {"results": str(args.results)},
            "environment": environment(),
            "seeds": results,
        },
    )


if __name__ == "__main__":
    main()
