"""The Qwen reranker at real size on a GPU: users per second of verbalizer scoring and of LoRA
training steps, and peak GPU memory, for a Qwen2.5-7B-shaped model with random weights (no
download: the timing depends on the shapes, not on the weights; benchmarks.random_models writes
it once and the reranker loads it by path).

Runs on any CUDA machine: `python -m benchmarks.llm_gpu`. Prompts are the demo data's, with
LlamaRec's settings (20 history titles, 20 candidates; BENCH_GPU_CANDIDATES to change).
Environment variables: BENCH_GPU_USERS (default 64), BENCH_GPU_BATCH (default 8),
BENCH_GPU_LAYERS (default 28, the 7B model's; fewer for a quick check).
"""

from __future__ import annotations

import os
import sys

import torch

from benchmarks.common import Timer, build_method, environment, prepared_dataset
from benchmarks.random_models import QWEN25_7B, random_qwen2
from seqrerank.candidates import CandidateTraining, sample_ground_truth
from seqrerank.data.dataset import load_sequences
from seqrerank.distributed import device
from seqrerank.training import TrainSettings, mixed_precision


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("benchmarks.llm_gpu needs a CUDA GPU")
    users = int(os.environ.get("BENCH_GPU_USERS", 64))
    batch = int(os.environ.get("BENCH_GPU_BATCH", 8))
    layers = int(os.environ.get("BENCH_GPU_LAYERS", 28))
    candidates = int(os.environ.get("BENCH_GPU_CANDIDATES", 20))
    data_dir = prepared_dataset("demo")
    data = load_sequences(data_dir)
    params = {
        "model_name": str(random_qwen2("qwen2.5-7b", QWEN25_7B, num_hidden_layers=layers)),
        "loader": "transformers",
        "max_history": 20,
        "max_candidates": candidates,
        "score_batch_size": batch,
    }
    reranker = build_method("qwen", data, data_dir, params)
    torch.cuda.reset_peak_memory_stats()

    val = sample_ground_truth(data, "val", candidates - 1, seed=0)
    histories = torch.nn.utils.rnn.pad_sequence(
        [torch.as_tensor(h[-20:]).flip(0) for h in data.inputs("val")[:users]], batch_first=True
    ).flip(1)
    pools = torch.as_tensor(val.items[:users])
    reranker.eval()
    with torch.inference_mode():
        reranker.score_candidates(torch.arange(batch), histories[:batch], pools[:batch])  # warm-up
        torch.cuda.synchronize()
        with Timer() as scoring:
            reranker.score_candidates(torch.arange(users), histories, pools)
            torch.cuda.synchronize()
    scoring_memory = torch.cuda.max_memory_allocated() / 2**30

    torch.cuda.reset_peak_memory_stats()
    reranker.train()
    optimizer = torch.optim.AdamW([p for p in reranker.parameters() if p.requires_grad], lr=1e-4)
    train = CandidateTraining(data, sample_ground_truth(data, "train", candidates - 1, seed=0))
    steps = list(reranker.training_batches(train, batch, torch.Generator().manual_seed(0)))
    steps = steps[: max(2, users // batch)]
    # As the training loop runs a step on a GPU: under bf16 autocast.
    precision = mixed_precision(reranker, TrainSettings(1, 1e-4, batch, 1), device())
    with Timer() as training:
        for step in steps:
            optimizer.zero_grad(set_to_none=True)
            with precision:
                loss = reranker.loss(step)
            loss.backward()
            optimizer.step()
        torch.cuda.synchronize()
    trained_users = sum(len(step[0]) for step in steps)

    prompt_tokens = sum(len(p.ids) for p in steps[0][0]) / len(steps[0][0])
    print(f"\n== Qwen reranker at 7B size, random weights ({environment()}) ==")
    print(f"GPU: {torch.cuda.get_device_name()}, {layers} layers, bf16, LoRA r 8 on q/v")
    print(f"{candidates} candidates, 20 history titles, ~{prompt_tokens:.0f} prompt tokens")
    print(
        f"verbalizer scoring: {users / scoring.seconds:.1f} users/s "
        f"(batches of {batch}), peak GPU memory {scoring_memory:.1f} GiB"
    )
    print(
        f"LoRA training: {trained_users / training.seconds:.1f} users/s "
        f"({training.seconds / len(steps):.2f} s per step of {batch}), "
        f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
    )


if __name__ == "__main__":
    main()
