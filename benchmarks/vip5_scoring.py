"""VIP5 scoring throughput on CPU with the tiny T5: candidates scored per second.

Every candidate of a user is scored by the decoder's length-normalised log-likelihood of its id,
all of a prompt's candidates in one decoder pass over the prompt's encoder states. The default
scoring prompt (A-3) lists the user's history, so its length does not grow with the pool; the
direct prompt B-5 lists the candidates, so its encoder's cost does. This prints candidates and
users per second for ground-truth pools (20 candidates) and Stage 1 pools (50) under both, on
the demo data with the demo's tiny CLIP image features.
Environment variable: BENCH_VIP5_USERS (default 256).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import BENCH_RESULTS, Timer, environment, prepared_dataset
from benchmarks.multimodal_beauty import feature_files
from seqrerank.candidates import sample_ground_truth
from seqrerank.data.dataset import as_dataset_files, load_sequences
from seqrerank.evaluation import rerank
from seqrerank.llm.tiny import save_tiny_model
from seqrerank.methods.vip5 import VIP5
from seqrerank.model_files import build_model
from seqrerank.pipeline import method_inputs

MAX_HISTORY = 10
POOL_SIZES = (20, 50)
TEMPLATES = ("A-3", "B-5")


def tiny_t5(**config: Any) -> str:
    """The tiny T5 checkpoint folder (``config``: T5Config values of another shape), written
    once under results/bench/models/."""
    name = "tiny-t5" + "".join(f"-{key}{value}" for key, value in sorted(config.items()))
    path = BENCH_RESULTS / "models" / name
    if not (path / "config.json").exists():
        save_tiny_model("t5", path, **config)
    return str(path)


def build_vip5(data_dir: Path, params: dict[str, Any]) -> VIP5:
    """VIP5 on the demo data with the demo's CLIP image features, as the workflow builds it."""
    data = load_sequences(data_dir)
    image = {"image": feature_files("demo")["image"]}
    inputs = method_inputs(as_dataset_files(data_dir), data, image)
    return build_model("vip5", data, params, 0, **inputs)


def main() -> None:
    users = int(os.environ.get("BENCH_VIP5_USERS", 256))
    data_dir = prepared_dataset("demo")
    data = load_sequences(data_dir)
    print(f"\n== VIP5 scoring benchmark, tiny T5 on CPU ({environment()}) ==")
    print(f"{users} demo users, history of up to {MAX_HISTORY} items")
    for template in TEMPLATES:
        params = {
            "model_name": tiny_t5(),
            "max_history": MAX_HISTORY,
            "score_template": template,
            "score_batch_size": 16,
        }
        model = build_vip5(data_dir, params).eval()
        for size in POOL_SIZES:
            lists = sample_ground_truth(data, "val", size - 1, seed=0)
            history = data.inputs("val")[0]
            prompts, _ = model.scoring_prompts([1], [history], [lists.items[0]])
            tokens = len(model.tokenizer(prompts[0]).input_ids)
            with torch.inference_mode():
                rerank(model, data, lists.first_users(8))  # warm-up
                with Timer() as scoring:
                    rerank(model, data, lists.first_users(users))
            print(
                f"{template}, {size} candidates (prompts of ~{tokens} tokens): "
                f"{users * size / scoring.seconds:.0f} candidates/s, "
                f"{users / scoring.seconds:.1f} users/s "
                f"({1000 * scoring.seconds / users:.1f} ms/user)"
            )


if __name__ == "__main__":
    main()
