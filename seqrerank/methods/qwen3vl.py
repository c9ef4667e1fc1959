"""Qwen3-VL reranker in four modes, one registered name each: how an item appears in the prompt.

* ``raw_image``: its title and its image (each image once through the vision tower per batch),
* ``caption``: its title and its BLIP-2 caption (data rule ``caption_items``),
* ``semantic_summary``: its title and the summary Qwen3-VL wrote of it (``summarise_items``),
* ``semantic_summary_small``: the same, written by the smaller summariser model.

Prompt, verbalizer scoring, LoRA training and backends are the shared
:class:`~seqrerank.methods.llm_reranker.LLMReranker`; batches are padded on the left.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import pandas as pd
import torch

from seqrerank.llm.prompts import Prompt
from seqrerank.methods.llm_reranker import LLMReranker

IMAGE_CACHE_SIZE = 4096  # preprocessed item images kept in memory (a 448 px image is ~5 MB)


class Qwen3VLReranker(LLMReranker):
    vision = True
    item_column: str | None = None
    """The item-table column shown after each title; None shows the image instead."""

    def item_texts(self, items: pd.DataFrame, num_items: int) -> list[str]:
        titles = super().item_texts(items, num_items)
        if self.item_column is None:
            if self.images is None:
                raise ValueError(
                    f"{type(self).__name__} shows the item images: give it the images folder "
                    "of the prepared dataset (use_image: true on the dataset)"
                )
            self._pixels = functools.lru_cache(maxsize=IMAGE_CACHE_SIZE)(self._preprocess)
            return titles
        if self.item_column not in items.columns:
            raise ValueError(
                f"the item table has no {self.item_column!r} column, which "
                f"{type(self).__name__} shows: produce it with the workflow's data rules "
                "(docs/llm-rerankers.md) before training"
            )
        extra = ["", *(items.loc[i, self.item_column] for i in range(1, num_items + 1))]
        return [f"{t}: {e}" if e else t for t, e in zip(titles, extra, strict=True)]

    def _preprocess(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Patches [n, dim] and grid [1, 3] of an item's image (the model is loaded by then)."""
        out = self.processor.image_processor(images=[self.images(item)], return_tensors="pt")
        return out["pixel_values"], out["image_grid_thw"]

    def image_tokens(self, item: int) -> list[int]:
        if self.item_column is not None or item not in self.images:
            return []
        return self._image_placeholder(item)

    @functools.cached_property
    def _image_placeholder(self) -> Callable[[int], list[int]]:
        """Per item, its image's placeholder ids, computed once: prompt building asks for them
        for every history and candidate line."""
        config = self.llm.config
        start, pad, end = (config.vision_start_token_id, config.image_token_id,
                           config.vision_end_token_id)  # fmt: skip
        merge = self.processor.image_processor.merge_size

        @functools.cache
        def placeholder(item: int) -> list[int]:
            _, grid = self._pixels(item)
            return [start, *[pad] * (int(grid.prod()) // merge**2), end]

        return placeholder

    def model_inputs(self, prompts: list[Prompt]) -> dict[str, torch.Tensor]:
        inputs = super().model_inputs(prompts)
        images = [self._pixels(item) for prompt in prompts for item in prompt.images]
        if images:
            inputs["pixel_values"] = torch.cat([p for p, _ in images]).to(self.llm.device)
            inputs["image_grid_thw"] = torch.cat([g for _, g in images]).to(self.llm.device)
            is_image = inputs["input_ids"] == self.llm.config.image_token_id
            inputs["mm_token_type_ids"] = is_image.int()
        return inputs


class Qwen3VLRawImage(Qwen3VLReranker):
    item_column = None


class Qwen3VLCaption(Qwen3VLReranker):
    item_column = "caption"


class Qwen3VLSemanticSummary(Qwen3VLReranker):
    item_column = "semantic_summary"


class Qwen3VLSemanticSummarySmall(Qwen3VLReranker):
    item_column = "semantic_summary_small"
