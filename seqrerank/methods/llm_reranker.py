"""What the LLM rerankers share (LlamaRec, Yue et al. 2023): a ranking prompt per user, scored by
a verbalizer, and LoRA fine-tuning with the loss on the answer label only.

Scoring is one forward pass per user: the logits of the candidates' index-label tokens at the
answer position are the candidates' scores (no generation, no parsing of free text). Training
shows the target among sampled negatives in a shuffled order and minimises the cross-entropy of
the target's label at the answer position. Only the LoRA adapter is trained and saved; the base
model is rebuilt from its name, so a checkpoint is megabytes even for a 7B model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import pandas as pd
import torch
import torch.nn.functional as F

from seqrerank.batching import index_batches
from seqrerank.candidates import CandidateTraining
from seqrerank.data.dataset import SequenceData
from seqrerank.data.images import ItemImages
from seqrerank.features import ItemFeatures
from seqrerank.llm.loading import LoadSettings, load_with_lora
from seqrerank.llm.prompts import Prompt, PromptBuilder
from seqrerank.methods.base import Recommender

log = logging.getLogger(__name__)

Backend = Literal["transformers", "vllm"]


class LLMReranker(Recommender):
    vision = False
    """Loads an image-text model (Qwen3-VL) instead of a causal LM."""

    def __init__(
        self,
        num_items: int,
        items: pd.DataFrame,
        images: ItemImages | None = None,
        model_name: str = "Qwen/Qwen2.5-1.5B-Instruct",
        max_history: int = 20,
        max_item_tokens: int = 32,
        max_candidates: int = 50,
        score_batch_size: int = 8,
        train_users_per_epoch: int | None = None,
        backend: Backend = "transformers",
        tensor_parallel_size: int = 1,
        loader: Literal["auto", "transformers", "unsloth"] = "auto",
        use_quantization: bool = False,
        use_torch_compile: bool = False,
        lora_rank: int = 8,
        lora_alpha: int = 32,
        lora_dropout: float = 0.05,
        lora_target_modules: Sequence[str] = ("q_proj", "v_proj"),
    ):
        """``items`` is the item table (``load_items``), ``images`` the items' images (for the
        modes that show them); ``max_candidates`` (qwen_max_candidates) caps the candidates
        scored per user: those after it keep Stage 1's order below the scored ones.
        ``train_users_per_epoch`` trains each epoch on that many users drawn afresh (all users
        when None): a cheaper epoch, since validation and evaluation always score every user.
        ``tensor_parallel_size``: the GPUs one vLLM engine spreads the model over (``backend:
        vllm`` only)."""
        super().__init__()
        if backend not in ("transformers", "vllm"):
            raise ValueError(f"backend must be 'transformers' or 'vllm', not {backend!r}")
        if tensor_parallel_size != 1 and backend != "vllm":
            raise ValueError("tensor_parallel_size is vLLM's: it needs backend 'vllm'")
        self.settings = LoadSettings(
            model_name=model_name,
            vision=self.vision,
            loader=loader,
            use_quantization=use_quantization,
            use_torch_compile=use_torch_compile,
            lora_rank=lora_rank,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            lora_target_modules=tuple(lora_target_modules),
        )
        self.images = images
        texts = self.item_texts(items, num_items)  # first: a missing text fails before loading
        self.llm, self.processor = load_with_lora(self.settings)
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.max_candidates = max_candidates
        self.score_batch_size = score_batch_size
        self.train_users_per_epoch = train_users_per_epoch
        self.backend = backend
        self.tensor_parallel_size = tensor_parallel_size
        self._vllm = None
        self.adapter_in_training = False
        """Set once training starts in this process: its validation then scores with
        transformers, since vLLM serves a merged, frozen copy of the weights."""
        self.prompts = PromptBuilder(
            self.tokenizer,
            texts,
            max_candidates=max_candidates,
            max_history=max_history,
            max_item_tokens=max_item_tokens,
            image_tokens=self.image_tokens if self.vision else None,
        )

    @classmethod
    def from_data(
        cls,
        data: SequenceData,
        items: pd.DataFrame | None = None,
        features: Mapping[str, ItemFeatures] | None = None,
        images: ItemImages | None = None,
        **params: Any,
    ) -> LLMReranker:
        if items is None:
            raise ValueError(f"{cls.__name__} shows items by their titles: give it the item table")
        return cls(num_items=data.num_items, items=items, images=images, **params)

    def item_texts(self, items: pd.DataFrame, num_items: int) -> list[str]:
        """The text that stands for each item in a prompt, indexed by item id (0 = padding)."""
        return ["", *(items.loc[item, "title"] for item in range(1, num_items + 1))]

    def image_tokens(self, item: int) -> list[int]:
        raise NotImplementedError

    def model_inputs(self, prompts: list[Prompt]) -> dict[str, torch.Tensor]:
        """A batch of prompts padded on the left, so every answer position is the last one."""
        length = max(len(p.ids) for p in prompts)
        ids = torch.full((len(prompts), length), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), length), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, length - len(prompt.ids) :] = torch.tensor(prompt.ids)
            mask[row, length - len(prompt.ids) :] = 1
        # The device its loader put the model on (seqrerank.llm.loading).
        return {"input_ids": ids.to(self.llm.device), "attention_mask": mask.to(self.llm.device)}

    def label_logits(self, prompts: list[Prompt], pool_sizes: list[int]) -> torch.Tensor:
        """Logits [batch, max pool size] of the first labels at the token after each prompt;
        -inf past a row's pool. Only these rows of the output layer are computed, not the
        whole vocabulary."""
        base = self.llm.get_base_model()
        hidden = base.model(**self.model_inputs(prompts)).last_hidden_state[:, -1]
        head = base.get_output_embeddings()
        labels = torch.tensor(self.prompts.labels[: max(pool_sizes)], device=hidden.device)
        logits = hidden @ head.weight[labels].T
        if head.bias is not None:
            logits = logits + head.bias[labels]
        beyond = torch.arange(len(labels)) >= torch.tensor(pool_sizes)[:, None]
        return logits.float().masked_fill(beyond.to(logits.device), float("-inf"))

    # ---- training --------------------------------------------------------------------------

    def training_batches(
        self, task: CandidateTraining, batch_size: int, generator: torch.Generator
    ) -> Iterator[tuple[list[Prompt], list[int], torch.Tensor]]:
        self.adapter_in_training = True
        examples = task.examples(self.max_candidates, generator)
        if self.train_users_per_epoch is not None:
            drawn = torch.randperm(len(examples), generator=generator)
            examples = [examples[i] for i in drawn[: self.train_users_per_epoch].tolist()]
        for idx in index_batches(len(examples), batch_size, generator):
            batch = [examples[i] for i in idx.tolist()]
            prompts = [self.prompts.build(history, cands) for history, cands, _ in batch]
            pool_sizes = [len(cands) for _, cands, _ in batch]
            yield prompts, pool_sizes, torch.tensor([answer for _, _, answer in batch])

    def loss(self, batch: tuple[list[Prompt], list[int], torch.Tensor]) -> torch.Tensor:
        """Cross-entropy of the target's label among the pool's labels at the answer position:
        the objective is the verbalizer that scores, so training ranks exactly as it is used."""
        prompts, pool_sizes, answers = batch
        logits = self.label_logits(prompts, pool_sizes)
        return F.cross_entropy(logits, answers.to(logits.device))

    # ---- scoring ---------------------------------------------------------------------------

    def score_candidates(
        self, users: torch.Tensor, histories: torch.Tensor, candidates: torch.Tensor
    ) -> torch.Tensor:
        """The logit of each candidate's label at the answer position; -inf for padding and
        for candidates beyond ``max_candidates``."""
        scored = candidates[:, : self.max_candidates]
        scores = torch.full(candidates.shape, float("-inf"), device=candidates.device)
        for start in range(0, len(candidates), self.score_batch_size):
            rows = range(start, min(start + self.score_batch_size, len(candidates)))
            pools = [scored[row][scored[row] > 0].tolist() for row in rows]
            prompts = [
                self.prompts.build(histories[row][histories[row] > 0].tolist(), pool)
                for row, pool in zip(rows, pools, strict=True)
            ]
            label_scores = self._label_scores(prompts, [len(pool) for pool in pools])
            for row, values in zip(rows, label_scores, strict=True):
                columns = torch.nonzero(scored[row] > 0).squeeze(1)
                scores[row, columns] = values.to(scores.device)
        return scores

    def _label_scores(self, prompts: list[Prompt], pool_sizes: list[int]) -> list[torch.Tensor]:
        if self.backend == "vllm" and not self.adapter_in_training:
            return self.vllm_scorer().score(prompts, pool_sizes)
        logits = self.label_logits(prompts, pool_sizes).cpu()
        return [logits[row, :size] for row, size in enumerate(pool_sizes)]

    def vllm_scorer(self):
        if self._vllm is None:
            from seqrerank.llm.vllm_backend import VLLMScorer

            self._vllm = VLLMScorer(
                self.llm,
                self.processor,
                self.prompts.labels,
                self.images if self.vision else None,
                tensor_parallel_size=self.tensor_parallel_size,
            )
        return self._vllm

    # ---- checkpoints: the adapter only ------------------------------------------------------

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        return {k: v.detach().cpu() for k, v in get_peft_model_state_dict(self.llm).items()}

    def load_state_dict(self, state_dict: dict[str, torch.Tensor], strict: bool = True, **_: Any):
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(self.llm, state_dict)
        if strict and result.unexpected_keys:
            raise KeyError(f"adapter weights that this model lacks: {result.unexpected_keys}")
        return result
