"""Qwen text reranker (LlamaRec with a Qwen2.5/Qwen3 instruct model): each item is its title.

Everything else (prompt, verbalizer scoring, LoRA training, backends) is the shared
:class:`~seqrerank.methods.llm_reranker.LLMReranker`.
"""

from __future__ import annotations

from seqrerank.methods.llm_reranker import LLMReranker


class Qwen(LLMReranker):
    vision = False
