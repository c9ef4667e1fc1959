"""Qwen models of real shapes with random weights, for the GPU benchmarks (no download: their
timing depends on the shapes, not on the weights).

A model is its checkpoint's public config.json values, built on the GPU (on the CPU without
one), saved in bf16 with the real Qwen tokenizer as a checkpoint folder under
results/bench/models/ (once; its name carries a digest of the config) and loaded by path through
seqrerank.llm.loading, exactly as a downloaded model is.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import BENCH_RESULTS

# Qwen/Qwen2.5-1.5B-Instruct's config.json.
QWEN25_15B = dict(
    vocab_size=151936,
    hidden_size=1536,
    intermediate_size=8960,
    num_hidden_layers=28,
    num_attention_heads=12,
    num_key_value_heads=2,
    hidden_act="silu",
    max_position_embeddings=32768,
    max_window_layers=21,
    rms_norm_eps=1e-6,
    rope_theta=1000000.0,
    sliding_window=32768,
    use_sliding_window=False,
    tie_word_embeddings=True,
    attention_dropout=0.0,
    initializer_range=0.02,
    bos_token_id=151643,
    eos_token_id=151645,
)
# Qwen/Qwen2.5-7B-Instruct's config.json.
QWEN25_7B = dict(
    vocab_size=152064,
    hidden_size=3584,
    intermediate_size=18944,
    num_hidden_layers=28,
    num_attention_heads=28,
    num_key_value_heads=4,
    hidden_act="silu",
    max_position_embeddings=32768,
    max_window_layers=28,
    rms_norm_eps=1e-6,
    rope_theta=1000000.0,
    sliding_window=131072,
    use_sliding_window=False,
    tie_word_embeddings=False,
    attention_dropout=0.0,
    initializer_range=0.02,
    bos_token_id=151643,
    eos_token_id=151645,
)
MODELS = BENCH_RESULTS / "models"


def random_qwen2(name: str, config: dict[str, Any], **overrides: Any) -> Path:
    """The checkpoint folder of a random-weight Qwen2 model of ``config`` (``overrides``: e.g.
    fewer layers for a quick check), written once under results/bench/models/."""
    config = {**config, **overrides}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:8]
    folder = MODELS / f"{name}-random-{digest}"
    if (folder / "config.json").exists():
        return folder
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from seqrerank.llm.tiny import qwen_tokenizer

    tokenizer = qwen_tokenizer()
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Qwen2ForCausalLM(Qwen2Config(**config, pad_token_id=tokenizer.pad_token_id))
    model.to(torch.bfloat16)
    model.config.dtype = torch.bfloat16  # loaded back in bf16 by the loader's dtype "auto"
    staging = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    staging.rename(folder)
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return folder
