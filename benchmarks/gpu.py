"""The GPU benchmark, on one GPU, as one short script: `python -m benchmarks.gpu` (a few minutes
on an H100). Each figure is printed beside its target and all are written, with the commit, GPU
and versions, to results/bench/gpu.json (after every part, so a run cut short keeps its figures):

* LRURec and BERT4Rec on the Amazon Beauty sequences with config/beauty.yaml's settings, trained
  from scratch for BENCH_GPU_EPOCHS epochs through the workflow's training loop (on the GPU,
  bf16 autocast): seconds per epoch (target <= 3 s; the first epoch includes CUDA's start-up,
  so the last one is compared) and the full ranking of every test user over all items, top 200
  (target <= 0.3 s for Beauty's 22,363 users), peak GPU memory;
* the Qwen reranker on a Qwen2.5-1.5B-shaped model with random weights
  (:mod:`benchmarks.random_models`) and the demo data's prompts with LlamaRec's settings (20
  history titles, 20 candidates): users per second of verbalizer scoring (the evaluation's
  ``rerank``: one forward pass per user, in batches) against generating the ranked list (one
  user at a time, greedy, two tokens per candidate as in "C, AB, F, ..."); target: scoring at
  least 20 times faster per user; peak GPU memory.

Without ../shared the sequential models run on the demo data (the targets are Beauty's).
Environment variables: BENCH_GPU_EPOCHS (default 2), BENCH_GPU_USERS (users scored, default
256), BENCH_GPU_GENERATE_USERS (users whose ranked list is generated, default 8),
BENCH_GPU_BATCH (users per scoring batch, default 16), BENCH_GPU_PARTS (default
lrurec,bert4rec,llm), BENCH_DATASET (demo: the demo data even where Beauty is present).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from datetime import UTC, datetime
from typing import Any

import torch

from benchmarks.common import (
    BENCH_RESULTS,
    Timer,
    bench_dataset,
    build_method,
    environment,
    prepared_dataset,
)
from benchmarks.random_models import QWEN25_15B, random_qwen2
from benchmarks.retrieval_beauty import config_settings
from seqrerank.candidates import sample_ground_truth
from seqrerank.data.dataset import load_sequences
from seqrerank.evaluation import evaluate, rerank, retrieve
from seqrerank.io import write_json
from seqrerank.pipeline import train

TARGETS = {
    "epoch_seconds": 3.0,
    "full_ranking_seconds": 0.3,
    "full_ranking_users": 22363,
    "verbalizer_speedup": 20.0,
}
OUT = BENCH_RESULTS / "gpu.json"
CANDIDATES = 20
HISTORY = 20


def gib(count: int) -> float:
    return round(count / 2**30, 2)


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def sequential(method: str, dataset: str, epochs: int) -> dict[str, Any]:
    """Train ``method`` from scratch for ``epochs`` epochs, then time the full ranking."""
    params, settings = config_settings(dataset, method)
    settings = dataclasses.replace(settings, epochs=epochs, patience=epochs)
    folder = BENCH_RESULTS / "gpu" / dataset / method
    shutil.rmtree(folder, ignore_errors=True)  # a benchmark measures a fresh run
    torch.cuda.reset_peak_memory_stats()
    model, data, history = train(method, prepared_dataset(dataset), params, settings, folder)
    train_peak = torch.cuda.max_memory_allocated()
    retrieve(model, data, "test", top_k=200)  # warm-up at the full size
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    with Timer() as ranking:
        lists = retrieve(model, data, "test", top_k=200)
        torch.cuda.synchronize()
    epoch_seconds = [h["train_seconds"] for h in history]
    metrics = evaluate(lists)
    return {
        "users": data.num_users,
        "items": data.num_items,
        "epoch_seconds": epoch_seconds,
        "steady_epoch_seconds": epoch_seconds[-1],
        "full_ranking_seconds": round(ranking.seconds, 4),
        "users_per_second": round(data.num_users / ranking.seconds),
        "train_peak_gib": gib(train_peak),
        "ranking_peak_gib": gib(torch.cuda.max_memory_allocated()),
        "test_after_training": {k: metrics[k] for k in ("ndcg@10", "recall@10")},
        "params": params,
        "settings": dataclasses.asdict(settings),
    }


def print_sequential(method: str, dataset: str, r: dict[str, Any]) -> None:
    epochs = ", ".join(f"{s:.2f}" for s in r["epoch_seconds"])
    scaled = r["full_ranking_seconds"] * TARGETS["full_ranking_users"] / r["users"]
    ranking_met = verdict(scaled <= TARGETS["full_ranking_seconds"])
    note = "" if dataset == "beauty" else " (the targets are Beauty's)"
    print(
        f"{method}, {dataset} ({r['users']:,} users x {r['items']:,} items){note}:\n"
        f"  epochs: {epochs} s; last {r['steady_epoch_seconds']:.2f} s "
        f"(target <= {TARGETS['epoch_seconds']:.0f} s: "
        f"{verdict(r['steady_epoch_seconds'] <= TARGETS['epoch_seconds'])}), "
        f"peak GPU memory {r['train_peak_gib']:.2f} GiB\n"
        f"  full ranking of {r['users']:,} users: {r['full_ranking_seconds']:.3f} s "
        f"({r['users_per_second']:,} users/s; target <= {TARGETS['full_ranking_seconds']} s for "
        f"{TARGETS['full_ranking_users']:,} users: {ranking_met}), "
        f"peak GPU memory {r['ranking_peak_gib']:.2f} GiB"
    )


def verbalizer_against_generation(users: int, generate_users: int, batch: int) -> dict[str, Any]:
    data_dir = prepared_dataset("demo")
    data = load_sequences(data_dir)
    params = {
        "model_name": str(random_qwen2("qwen2.5-1.5b", QWEN25_15B)),
        "loader": "transformers",
        "max_history": HISTORY,
        "max_item_tokens": 32,
        "max_candidates": CANDIDATES,
        "score_batch_size": batch,
    }
    model = build_method("qwen", data, data_dir, params)
    lists = sample_ground_truth(data, "val", CANDIDATES - 1, seed=0).first_users(users)
    rerank(model, data, lists.first_users(batch))  # warm-up
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    with Timer() as scoring:
        rerank(model, data, lists)
        torch.cuda.synchronize()
    scoring_peak = torch.cuda.max_memory_allocated()

    histories = data.inputs("val")
    prompts = [
        model.prompts.build(histories[user - 1].tolist(), [int(i) for i in items if i > 0])
        for user, items in zip(lists.users, lists.items, strict=True)
    ]
    tokens = 2 * CANDIDATES  # a label and ", " per candidate

    def generate(prompt: Any) -> None:
        ids = torch.tensor([prompt.ids], device=model.llm.device)
        model.llm.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            do_sample=False,
            pad_token_id=model.tokenizer.pad_token_id,
        )

    model.eval()
    with torch.inference_mode():
        generate(prompts[0])  # warm-up
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
        with Timer() as generating:
            for prompt in prompts[:generate_users]:
                generate(prompt)
            torch.cuda.synchronize()
    per_user_scoring = scoring.seconds / users
    per_user_generating = generating.seconds / generate_users
    return {
        "model": "Qwen2.5-1.5B shape, random weights, bf16",
        "prompt_tokens": round(sum(len(p.ids) for p in prompts) / len(prompts)),
        "scored_users": users,
        "scoring_batch": batch,
        "scoring_users_per_second": round(1 / per_user_scoring, 1),
        "scoring_peak_gib": gib(scoring_peak),
        "generated_users": generate_users,
        "generated_tokens": tokens,
        "generating_users_per_second": round(1 / per_user_generating, 2),
        "generating_peak_gib": gib(torch.cuda.max_memory_allocated()),
        "speedup": round(per_user_generating / per_user_scoring, 1),
    }


def print_llm(r: dict[str, Any]) -> None:
    print(
        f"Qwen reranker, {r['model']}, {CANDIDATES} candidates, {HISTORY} history titles "
        f"(~{r['prompt_tokens']} prompt tokens):\n"
        f"  verbalizer scoring: {r['scoring_users_per_second']:.1f} users/s "
        f"(batches of {r['scoring_batch']}), peak GPU memory {r['scoring_peak_gib']:.2f} GiB\n"
        f"  generating the ranked list ({r['generated_tokens']} tokens, one user at a time): "
        f"{r['generating_users_per_second']:.2f} users/s, peak GPU memory "
        f"{r['generating_peak_gib']:.2f} GiB\n"
        f"  scoring is {r['speedup']:.0f}x faster per user (target >= "
        f"{TARGETS['verbalizer_speedup']:.0f}x: "
        f"{verdict(r['speedup'] >= TARGETS['verbalizer_speedup'])})"
    )


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("benchmarks.gpu needs a CUDA GPU")
    epochs = int(os.environ.get("BENCH_GPU_EPOCHS", 2))
    users = int(os.environ.get("BENCH_GPU_USERS", 256))
    generate_users = int(os.environ.get("BENCH_GPU_GENERATE_USERS", 8))
    batch = int(os.environ.get("BENCH_GPU_BATCH", 16))
    parts = os.environ.get("BENCH_GPU_PARTS", "lrurec,bert4rec,llm").split(",")
    dataset = bench_dataset()
    results: dict[str, Any] = {
        "environment": {
            **environment(),
            "gpu": torch.cuda.get_device_name(),
            "gpus": torch.cuda.device_count(),
            "cuda": torch.version.cuda,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
        },
        "targets": TARGETS,
    }
    print(f"\n== GPU benchmark on one {torch.cuda.get_device_name()} ({results['environment']}) ==")
    for method in ("lrurec", "bert4rec"):
        if method in parts:
            results[method] = {"dataset": dataset, **sequential(method, dataset, epochs)}
            print_sequential(method, dataset, results[method])
            write_json(OUT, results)
            torch.cuda.empty_cache()
    if "llm" in parts:
        results["llm"] = verbalizer_against_generation(users, generate_users, batch)
        print_llm(results["llm"])
        write_json(OUT, results)
    print(f"\nwritten to {OUT}")


if __name__ == "__main__":
    main()
