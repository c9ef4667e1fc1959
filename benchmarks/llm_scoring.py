"""Verbalizer scoring versus generating the ranked list, on the tiny Qwen model on CPU.

Verbalizer scoring reads every candidate's label logit from one forward pass per user; the
alternative asks the model to write the whole ranking ("C, AB, F, ...") and parses it, one
decoding step per token. LlamaRec reports under 1 s versus 56 s per user for a 7B model; this
prints users per second of both on the demo data (20 ground-truth candidates per user).
Environment variable: BENCH_LLM_USERS (default 64).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from benchmarks.common import (
    Timer,
    build_method,
    environment,
    prepared_dataset,
    tiny_checkpoint,
)
from seqrerank.candidates import sample_ground_truth
from seqrerank.data.dataset import load_sequences

PARAMS = {"max_history": 20, "max_item_tokens": 32, "max_candidates": 20, "score_batch_size": 8}


def main() -> None:
    users = int(os.environ.get("BENCH_LLM_USERS", 64))
    data_dir = prepared_dataset("demo")
    data = load_sequences(data_dir)
    params = {**PARAMS, "model_name": tiny_checkpoint("qwen3"), "loader": "transformers"}
    model = build_method("qwen", data, data_dir, params)
    lists = sample_ground_truth(data, "val", 19, seed=0)
    histories = [data.inputs("val")[u][-20:] for u in range(users)]
    prompts = [model.prompts.build(h, c) for h, c in zip(histories, lists.items, strict=False)]
    # A ranked list of 20 labels is about 2 tokens a label ("AB", ", ").
    ranked_list_tokens = 2 * lists.items.shape[1]

    with torch.inference_mode():
        with Timer() as scoring:
            for start in range(0, users, 8):
                batch = prompts[start : start + 8]
                model.label_logits(batch, [20] * len(batch))
        with Timer() as generating:
            for prompt in prompts[: max(1, users // 8)]:
                model.llm.generate(
                    input_ids=torch.tensor([prompt.ids]),
                    attention_mask=torch.ones(1, len(prompt.ids), dtype=torch.long),
                    max_new_tokens=ranked_list_tokens,
                    min_new_tokens=ranked_list_tokens,
                    do_sample=False,
                    pad_token_id=model.tokenizer.pad_token_id,
                )
    generated_users = max(1, users // 8)
    prompt_tokens = np.mean([len(p.ids) for p in prompts])
    print(f"\n== LLM scoring benchmark, tiny Qwen3 on CPU ({environment()}) ==")
    print(f"{users} demo users, 20 candidates, prompts of {prompt_tokens:.0f} tokens on average")
    print(
        f"verbalizer scoring (one forward pass, batches of 8): "
        f"{users / scoring.seconds:.1f} users/s ({1000 * scoring.seconds / users:.1f} ms/user)"
    )
    print(
        f"generating the ranked list ({ranked_list_tokens} tokens, one user at a time): "
        f"{generated_users / generating.seconds:.2f} users/s "
        f"({1000 * generating.seconds / generated_users:.0f} ms/user)"
    )
    ratio = (generating.seconds / generated_users) / (scoring.seconds / users)
    print(f"verbalizer scoring is {ratio:.0f}x faster per user (LlamaRec, 7B: <1 s vs 56 s)")


if __name__ == "__main__":
    main()
