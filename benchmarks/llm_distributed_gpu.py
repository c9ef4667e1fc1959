"""The Qwen reranker on one GPU and on all of a machine's GPUs: users per second of one LoRA
epoch and of scoring, and peak GPU memory, through the workflow's own code (the shared training
loop under DistributedDataParallel, sharded reranking) started by torchrun as the rules start it.

Runs on any CUDA machine: `python -m benchmarks.llm_distributed_gpu`. The model is a
Qwen2.5-7B-shaped one with random weights (no download: the timing depends on the shapes), written
once to results/bench/ and loaded by every process, or the model folder BENCH_MODEL names. Prompts
are the demo data's with LlamaRec's settings (20 history titles, 20 candidates). Environment
variables: BENCH_GPU_USERS (users trained on and scored, default 256), BENCH_GPU_BATCH (training
batch and scoring batch, default 8), BENCH_GPU_LAYERS (default 28, the 7B model's),
BENCH_GPU_CANDIDATES (default 20).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist

from benchmarks.common import Timer, build_method, environment, prepared_dataset
from benchmarks.random_models import QWEN25_7B, random_qwen2
from seqrerank import distributed
from seqrerank.candidates import CandidateTraining, RankedLists, sample_ground_truth
from seqrerank.data.dataset import load_sequences
from seqrerank.evaluation import rerank
from seqrerank.pipeline import use_threads
from seqrerank.training import TrainSettings, fit


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("benchmarks.llm_distributed_gpu needs a CUDA GPU")
    # The step the workers run, by the name they can import it under (not __main__'s).
    from benchmarks.llm_distributed_gpu import measure

    users = int(os.environ.get("BENCH_GPU_USERS", 256))
    batch = int(os.environ.get("BENCH_GPU_BATCH", 8))
    layers = int(os.environ.get("BENCH_GPU_LAYERS", 28))
    candidates = int(os.environ.get("BENCH_GPU_CANDIDATES", 20))
    model = os.environ.get("BENCH_MODEL") or str(
        random_qwen2("qwen2.5-7b", QWEN25_7B, num_hidden_layers=layers)
    )
    params = {
        "model_name": model,
        "loader": "transformers",  # the same loader on 1 GPU as on several
        "max_history": 20,
        "max_candidates": candidates,
        "score_batch_size": batch,
        "train_users_per_epoch": users,
    }
    data_dir = prepared_dataset("demo")
    gpus = torch.cuda.device_count()
    results = {}
    for processes in sorted({1, gpus}):
        with tempfile.TemporaryDirectory(prefix="seqrerank-bench-") as folder:
            result = Path(folder) / "result.json"
            distributed.launch(
                measure,
                distributed.Processes(per_node=processes),
                log_path=Path(folder) / "log",
                threads=os.cpu_count() or 1,
                data_dir=data_dir,
                params=params,
                settings=TrainSettings(epochs=1, lr=1e-4, batch_size=batch, patience=1),
                users=users,
                result_path=result,
            )
            results[processes] = json.loads(result.read_text())

    print(f"\n== Qwen reranker on 1 and {gpus} GPUs ({environment()}) ==")
    print(f"GPU: {torch.cuda.get_device_name()}, model {model} ({layers} layers if random), bf16")
    print(f"LoRA r 8 on q/v, batches of {batch}, {users} users, {candidates} candidates")
    print("GPUs  LoRA epoch users/s  scoring users/s  peak GPU memory (GiB, per GPU)")
    for processes, result in results.items():
        print(
            f"{processes:>4}  {users / result['train_seconds']:>19.1f}  "
            f"{users / result['score_seconds']:>15.1f}  {result['peak_gib']:>6.1f}"
        )


def measure(
    data_dir: Path,
    params: dict,
    settings: TrainSettings,
    users: int,
    result_path: Path,
    threads: int,
) -> None:
    """One LoRA epoch on ``users`` users and the scoring of as many val users, timed; rank 0
    writes the seconds and the largest peak GPU memory of all processes to ``result_path``."""
    use_threads(threads)
    data = load_sequences(data_dir)
    size = params["max_candidates"] - 1
    model = build_method("qwen", data, data_dir, params, seed=settings.seed)
    train = CandidateTraining(data, sample_ground_truth(data, "train", size, seed=0))
    val = first(sample_ground_truth(data, "val", size, seed=0), users)
    rerank(model, data, first(val, params["score_batch_size"] * distributed.world_size()))
    torch.cuda.reset_peak_memory_stats()  # of the timed epoch and scoring, after a warm-up
    with tempfile.TemporaryDirectory() as checkpoints:
        history = fit(model, train, settings, Path(checkpoints), lambda _: {settings.metric: 0.0})
    torch.cuda.synchronize()
    with Timer() as scoring:
        rerank(model, data, val)
        torch.cuda.synchronize()
    peak = torch.tensor(torch.cuda.max_memory_allocated() / 2**30, device="cuda")
    if distributed.world_size() > 1:
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    if distributed.is_main():
        result = {
            "train_seconds": history[0]["train_seconds"],
            "score_seconds": scoring.seconds,
            "peak_gib": peak.item(),
        }
        Path(result_path).write_text(json.dumps(result))


def first(lists: RankedLists, count: int) -> RankedLists:
    return RankedLists(
        lists.split,
        lists.users[:count],
        lists.targets[:count],
        lists.items[:count],
        lists.scores[:count],
    )


if __name__ == "__main__":
    main()
