"""VIP5 scoring throughput on CPU with the tiny T5: candidates scored per second.

Every candidate of a user is scored by the decoder's log-likelihood of its id, all of a prompt's
candidates in one decoder pass over the prompt's encoder states; the prompt lists the
candidates, so its length (and the encoder's cost) grows with the pool. This prints candidates
and users per second for ground-truth pools (20 candidates) and Stage 1 pools (50), on the demo
data with the demo's tiny CLIP image features.
Environment variable: BENCH_VIP5_USERS (default 256).
"""

from __future__ import annotations

import os

from benchmarks.common import Timer, environment, prepared_dataset
from benchmarks.multimodal_beauty import feature_files
from seqrerank.candidates import sample_ground_truth
from seqrerank.data.dataset import load_sequences
from seqrerank.evaluation import rerank
from seqrerank.pipeline import build_model

PARAMS = {"model_name": "tiny", "max_history": 10, "score_batch_size": 16}
POOL_SIZES = (20, 50)


def main() -> None:
    users = int(os.environ.get("BENCH_VIP5_USERS", 256))
    data_dir = prepared_dataset("demo")
    data = load_sequences(data_dir)
    image = {"image": feature_files("demo")["image"]}
    model = build_model("vip5", data, data_dir, PARAMS, seed=0, features=image)
    print(f"\n== VIP5 scoring benchmark, tiny T5 on CPU ({environment()}) ==")
    print(f"{users} demo users, history of up to {PARAMS['max_history']} items")
    for size in POOL_SIZES:
        lists = sample_ground_truth(data, "val", size - 1, seed=0)
        history = data.inputs("val")[0][-PARAMS["max_history"] :]
        tokens = len(model.tokenizer(model.prompt(1, history, lists.items[0])).input_ids)
        rerank(model, data, lists.first_users(8))  # warm-up
        with Timer() as scoring:
            rerank(model, data, lists.first_users(users))
        print(
            f"{size} candidates (prompts of ~{tokens} tokens): "
            f"{users * size / scoring.seconds:.0f} candidates/s, "
            f"{users / scoring.seconds:.1f} users/s ({1000 * scoring.seconds / users:.1f} ms/user)"
        )


if __name__ == "__main__":
    main()
