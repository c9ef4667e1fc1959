"""VIP5 at t5-small and t5-base size on a GPU: candidates per second of scoring and of training
steps, and peak GPU memory, with random weights (no download: the timing depends on the shapes,
not on the weights).

Runs on any CUDA machine: `python -m benchmarks.vip5_gpu`. The model is the ``tiny`` T5 built
with the real models' ``T5Config`` values, on the demo data with the demo's CLIP features; its
small tokenizer keeps whole words for the prompt's words and item ids, so prompts are about as
long as with T5's vocabulary. Weights in float32, as loaded by ``from_pretrained``.
Environment variables: BENCH_GPU_USERS (default 256), BENCH_GPU_BATCH (prompts per pass,
default 16), BENCH_GPU_CANDIDATES (default 50), BENCH_GPU_MODELS (default t5-small,t5-base).
"""

from __future__ import annotations

import os
import sys

import torch

from benchmarks.common import Timer, environment, prepared_dataset
from benchmarks.multimodal_beauty import feature_files
from seqrerank.batching import pad_left
from seqrerank.candidates import CandidateTraining, sample_ground_truth
from seqrerank.data.dataset import load_sequences
from seqrerank.pipeline import build_model

# The T5Config values of the released checkpoints (their config.json).
T5_CONFIGS = {
    "t5-small": dict(
        vocab_size=32128,
        d_model=512,
        d_kv=64,
        d_ff=2048,
        num_layers=6,
        num_decoder_layers=6,
        num_heads=8,
    ),
    "t5-base": dict(
        vocab_size=32128,
        d_model=768,
        d_kv=64,
        d_ff=3072,
        num_layers=12,
        num_decoder_layers=12,
        num_heads=12,
    ),
}
MAX_HISTORY = 10


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("benchmarks.vip5_gpu needs a CUDA GPU")
    users = int(os.environ.get("BENCH_GPU_USERS", 256))
    batch = int(os.environ.get("BENCH_GPU_BATCH", 16))
    candidates = int(os.environ.get("BENCH_GPU_CANDIDATES", 50))
    names = os.environ.get("BENCH_GPU_MODELS", "t5-small,t5-base").split(",")
    data_dir = prepared_dataset("demo")
    data = load_sequences(data_dir)
    image = {"image": feature_files("demo")["image"]}
    val = sample_ground_truth(data, "val", candidates - 1, seed=0)
    histories = pad_left(data.inputs("val")[:users], MAX_HISTORY)
    pools = torch.as_tensor(val.items[:users])
    train = CandidateTraining(data, sample_ground_truth(data, "train", candidates - 1, seed=0))

    print(f"\n== VIP5 at real size, random weights ({environment()}) ==")
    print(f"GPU: {torch.cuda.get_device_name()}, float32, {candidates} candidates per prompt, "
          f"history of {MAX_HISTORY} items, {batch} prompts per pass")  # fmt: skip
    for name in names:
        params = {
            "model_name": "tiny",
            "tiny_config": T5_CONFIGS[name],
            "max_history": MAX_HISTORY,
            "max_candidates": candidates,
            "score_batch_size": batch,
        }
        model = build_model("vip5", data, data_dir, params, seed=0, features=image)
        model.eval()
        torch.cuda.reset_peak_memory_stats()
        with torch.inference_mode():
            model.score_candidates(torch.arange(batch) + 1, histories[:batch], pools[:batch])
            torch.cuda.synchronize()
            with Timer() as scoring:
                model.score_candidates(torch.arange(users) + 1, histories, pools)
                torch.cuda.synchronize()
        scoring_memory = torch.cuda.max_memory_allocated() / 2**30

        torch.cuda.reset_peak_memory_stats()
        model.train()
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=1e-3)
        steps = list(model.training_batches(train, batch, torch.Generator().manual_seed(0)))
        steps = steps[: max(2, users // batch)]
        with Timer() as training:
            for step in steps:
                optimizer.zero_grad(set_to_none=True)
                model.loss(step).backward()
                optimizer.step()
            torch.cuda.synchronize()
        trained = sum(len(step[0]) for step in steps) * candidates
        frozen = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in trainable)
        print(
            f"{name} ({frozen / 1e6:.0f}M frozen, {sum(p.numel() for p in trainable) / 1e6:.2f}M "
            f"trained): scoring {users * candidates / scoring.seconds:.0f} candidates/s "
            f"(peak {scoring_memory:.1f} GiB), training {trained / training.seconds:.0f} "
            f"candidates/s (peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB)"
        )
        del model, optimizer
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
