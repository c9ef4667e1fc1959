"""VBPR, MMGCN and BM3 on the real Amazon Beauty sequences, with the items' brand/category
attributes as their (only) modality: test Recall/NDCG@10/20, seconds per epoch and peak memory,
beside LRURec's figures from the retrieval benchmark, and the MMRec toolbox's published figures
(on Amazon Baby, with image and text features: a reference point, not the same data).

Each model trains in a fresh process, so its peak memory is its own. Without ../shared it runs
on the built-in demo data instead, with the demo's CLIP image and text features.
Environment variables: BENCH_EPOCHS (default 40), BENCH_PATIENCE (default 5), BENCH_DATASET=demo
(the demo data even where Beauty is present: a quick check of the code).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from benchmarks.common import (
    BENCH_RESULTS,
    REPO,
    bench_dataset,
    environment,
    epoch_budget,
    in_fresh_process,
    prepared_dataset,
)
from benchmarks.retrieval_beauty import benchmark_retriever, ranking_times
from seqrerank.encoders import FeatureSettings, build_item_features
from seqrerank.io import read_json, write_json
from seqrerank.training import TrainSettings

METHODS = ("vbpr", "mmgcn", "bm3")
REPORTED = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")
# MMRec (Zhou et al.), full ranking on Amazon Baby: Recall@20 / NDCG@20.
MMREC_BABY = {
    "vbpr": {"recall@20": 0.0663, "ndcg@20": 0.0284},
    "mmgcn": {"recall@20": 0.0615, "ndcg@20": 0.0261},
    "bm3": {"recall@20": 0.0883, "ndcg@20": 0.0383},
}
# MMRec's settings: embedding size 64, Adam lr 1e-3, batch size 2048, no weight decay (the
# models regularise in their losses), early stopping on validation Recall@20. MMGCN's other
# settings are its defaults, MMRec's (3 layers, concatenation, MMRec's latent widths).
PARAMS = {"vbpr": {"hidden": 64}, "mmgcn": {"hidden": 64}, "bm3": {"hidden": 64}}


def feature_files(dataset: str) -> dict[str, Path]:
    """Attribute multi-hots on Beauty; on the demo data, its CLIP image and text features."""
    data_dir = prepared_dataset(dataset)
    out = BENCH_RESULTS / dataset / "features"
    if dataset == "beauty":
        modalities, settings = ("attributes",), FeatureSettings()
    else:
        demo = yaml.safe_load((REPO / "config/demo.yaml").read_text())
        modalities, settings = ("image", "text"), FeatureSettings(**demo["features"])
    for modality in modalities:
        build_item_features(modality, data_dir, settings, out / f"{modality}.pt")
    return {modality: out / f"{modality}.pt" for modality in modalities}


def print_report(dataset: str, results: dict, lrurec: dict | None) -> None:
    print(f"\n== Multimodal retrieval benchmark on {dataset} ({environment()}) ==")
    header = "".join(f"{m:>11}" for m in REPORTED)
    print(f"{'':<24}{header}{'s/epoch':>10}{'peak MB':>10}")
    rows = dict(results)
    if lrurec:
        rows = {"lrurec": lrurec, **rows}
    else:
        print("(no LRURec row: run `python -m benchmarks.retrieval_beauty` first)")
    for name, r in rows.items():
        metrics = "".join(f"{r['test'][m]:>11.4f}" for m in REPORTED)
        cost = f"{r['seconds_per_epoch']:>10.1f}{r['peak_rss_mb']:>10.0f}"
        print(f"{name + ' (test)':<24}{metrics}{cost}")
    if "mmgcn" in results:
        mmgcn = results["mmgcn"]
        print(
            f"MMGCN with MMRec's settings (3 layers, concatenation, MMRec's latent widths): "
            f"{mmgcn['seconds_per_epoch']:.1f} s/epoch over {mmgcn['epochs_run']} epoch(s), "
            f"full ranking {ranking_times(mmgcn['full_ranking_seconds'])}"
        )
    print("MMRec on Amazon Baby (reference, other data):")
    for name, published in MMREC_BABY.items():
        cells = "".join(f"{published.get(m, float('nan')):>11.4f}" for m in REPORTED)
        print(f"{name:<24}{cells}")


def main() -> None:
    dataset = bench_dataset()
    features = feature_files(dataset)
    settings = TrainSettings(
        **epoch_budget(),
        lr=1e-3,
        weight_decay=0.0,
        batch_size=2048,
        metric="recall@20",
    )
    results = {}
    for method in METHODS:
        results[method] = in_fresh_process(
            benchmark_retriever, method, PARAMS[method], dataset, settings, features
        )
    out = BENCH_RESULTS / f"{dataset}.json"
    merged = read_json(out) if out.exists() else {}
    print_report(dataset, results, merged.get("lrurec"))
    merged.update(results)
    write_json(out, merged)
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
