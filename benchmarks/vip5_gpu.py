"""VIP5 at t5-small and t5-base size on a GPU: candidates per second of scoring, training
examples per second of both objectives, and peak GPU memory, with random weights (no download:
the timing depends on the shapes, not on the weights).

Runs on any CUDA machine: `python -m benchmarks.vip5_gpu`. The model is the tiny T5 of
seqrerank.llm.tiny built with the real models' ``T5Config`` values (a checkpoint folder written
once under results/bench/models/), on the demo data with the demo's CLIP features; its small
tokenizer keeps whole words for the prompt's words and item ids, so prompts are about as long as
with T5's vocabulary. Weights in float32, as loaded by ``from_pretrained``; training steps under
bf16 autocast, as the training loop runs them on a GPU.
Environment variables: BENCH_GPU_USERS (default 256), BENCH_GPU_BATCH (prompts per pass,
default 16), BENCH_GPU_CANDIDATES (default 50), BENCH_GPU_MODELS (default t5-small,t5-base).
"""

from __future__ import annotations

import os
import sys

import torch

from benchmarks.common import Timer, environment, prepared_dataset
from benchmarks.vip5_scoring import build_vip5, tiny_t5
from seqrerank.batching import pad_left
from seqrerank.candidates import CandidateTraining, sample_ground_truth
from seqrerank.data.dataset import load_sequences

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
    val = sample_ground_truth(data, "val", candidates - 1, seed=0)
    histories = pad_left(data.inputs("val")[:users], MAX_HISTORY).cuda()
    pools = torch.as_tensor(val.items[:users]).cuda()
    user_ids = torch.arange(1, users + 1).cuda()
    train = CandidateTraining(data, sample_ground_truth(data, "train", candidates - 1, seed=0))

    print(f"\n== VIP5 at real size, random weights ({environment()}) ==")
    print(f"GPU: {torch.cuda.get_device_name()}, float32, {candidates} candidates per prompt, "
          f"history of {MAX_HISTORY} items, {batch} prompts per pass")  # fmt: skip
    for name in names:
        for template in ("A-3", "B-5"):
            params = {
                "model_name": tiny_t5(**T5_CONFIGS[name]),
                "score_template": template,
                "max_history": MAX_HISTORY,
                "max_candidates": candidates,
                "score_batch_size": batch,
            }
            model = build_vip5(data_dir, params).cuda().eval()
            torch.cuda.reset_peak_memory_stats()
            with torch.inference_mode():
                model.score_candidates(user_ids[:batch], histories[:batch], pools[:batch])
                torch.cuda.synchronize()
                with Timer() as scoring:
                    model.score_candidates(user_ids, histories, pools)
                    torch.cuda.synchronize()
            print(
                f"{name}, scoring prompt {template}: {users * candidates / scoring.seconds:.0f} "
                f"candidates/s (peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB)"
            )
            del model
            torch.cuda.empty_cache()
        for objective in ("seq2seq", "listwise"):
            params = {
                "model_name": tiny_t5(**T5_CONFIGS[name]),
                "objective": objective,
                "max_history": MAX_HISTORY,
                "max_candidates": candidates,
            }
            model = build_vip5(data_dir, params).cuda().train()
            torch.cuda.reset_peak_memory_stats()
            trainable = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(trainable, lr=1e-3)
            steps = list(model.training_batches(train, batch, torch.Generator().manual_seed(0)))
            steps = steps[: max(2, users // batch)]
            with Timer() as training:
                for step in steps:
                    optimizer.zero_grad(set_to_none=True)
                    with torch.autocast("cuda", dtype=torch.bfloat16):
                        loss = model.loss(step)
                    loss.backward()
                    optimizer.step()
                torch.cuda.synchronize()
            examples = sum(len(step[0]) for step in steps)
            trained = sum(p.numel() for p in trainable)
            frozen = sum(p.numel() for p in model.parameters()) - trained
            unit = (
                "prompts (one per template family and user)"
                if objective == "seq2seq"
                else (f"users ({candidates} candidates each)")
            )
            print(
                f"{name} ({frozen / 1e6:.0f}M frozen, {trained / 1e6:.2f}M "
                f"trained), {objective} training: {examples / training.seconds:.0f} {unit}/s "
                f"(peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB)"
            )
            del model, optimizer
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
