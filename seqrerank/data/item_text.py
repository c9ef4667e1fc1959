"""Item texts generated from item images: BLIP-2 captions and Qwen3-VL semantic summaries.

Both are cached per item and resume: every finished item is written atomically to
``<cache_dir>/<settings fingerprint>/<item_id>.txt``, so a rerun (after a crash, a timeout or a
pre-empted SLURM job) generates only what is missing, and changed settings start a fresh cache.
The result is a table ``item_id,<column>`` beside ``items.csv`` that
:func:`~seqrerank.data.dataset.load_items` joins into the item table.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
from PIL import Image

from seqrerank.console import progress
from seqrerank.data.dataset import DatasetFiles, as_dataset_files, load_items
from seqrerank.data.images import ItemImages
from seqrerank.io import atomic_path, write_text

log = logging.getLogger(__name__)

SUMMARY_PROMPT = (
    "Summarise this product for a recommender system in one or two sentences: what it is, "
    "its category, look and style, and who would buy it. Its title is: {title}"
)


@dataclass(frozen=True)
class CaptionSettings:
    model_name: str = "Salesforce/blip2-opt-2.7b"
    backend: Literal["transformers", "lavis"] = "transformers"
    """transformers' Blip2ForConditionalGeneration, or LAVIS (its own environment)."""
    batch_size: int = 8
    max_tokens: int = 30


@dataclass(frozen=True)
class SummarySettings:
    model_name: str = "Qwen/Qwen3-VL-8B-Instruct"
    batch_size: int = 4
    """semantic_summary_batch_size"""
    max_tokens: int = 64
    """semantic_summary_max_tokens"""
    image_workers: int = 4
    """threads loading the next batch's images while the current one generates"""
    preload_all_images: bool = False
    use_quantization: bool = False
    use_torch_compile: bool = False


@dataclass(frozen=True)
class Item:
    item_id: int
    title: str


def write_item_texts(
    dataset: DatasetFiles | str | Path,
    column: str,
    out_path: str | Path,
    cache_dir: str | Path,
    settings: CaptionSettings | SummarySettings,
    generate: Callable[[list[Item], list[Image.Image]], list[str]] | None = None,
) -> None:
    """Generate ``column`` for every item that has an image and write ``out_path``. Items
    already in the cache are not generated again; ``generate`` (default: the model the
    settings name, loaded only if something is missing) maps a batch to its texts."""
    dataset = as_dataset_files(dataset)
    table = load_items(dataset)
    images = ItemImages(dataset.images, table) if dataset.images else None
    items = [Item(int(item), str(row["title"])) for item, row in table.iterrows() if row["image"]]
    cache = Path(cache_dir) / fingerprint(settings)
    missing = [item for item in items if not (cache / f"{item.item_id}.txt").exists()]
    log.info(
        "%s: %d items with images, %d cached in %s, %d to generate",
        column,
        len(items),
        len(items) - len(missing),
        cache,
        len(missing),
    )
    if missing:
        if generate is None:
            generate = load_generator(settings)
        cache.mkdir(parents=True, exist_ok=True)
        (cache / "settings.json").write_text(json.dumps(asdict(settings), indent=2))
        batches = [
            missing[i : i + settings.batch_size]
            for i in range(0, len(missing), settings.batch_size)
        ]
        workers = getattr(settings, "image_workers", 1)
        preload = getattr(settings, "preload_all_images", False)
        loaded = prefetched_images(batches, images, workers, preload)
        for batch, images in progress(
            zip(batches, loaded, strict=True), desc=column, total=len(batches)
        ):
            for item, text in zip(batch, _generate_batch(generate, batch, images), strict=True):
                write_text(cache / f"{item.item_id}.txt", text)
    texts = {item.item_id: (cache / f"{item.item_id}.txt").read_text() for item in items}
    table = pd.DataFrame({"item_id": list(texts), column: list(texts.values())})
    with atomic_path(out_path) as tmp:
        table.to_csv(tmp, index=False)


def fingerprint(settings: CaptionSettings | SummarySettings) -> str:
    """What makes two runs' texts interchangeable: model, prompt and generation length."""
    keys = {
        k: v for k, v in asdict(settings).items() if k in ("model_name", "backend", "max_tokens")
    }
    payload = json.dumps([type(settings).__name__, keys, SUMMARY_PROMPT], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def prefetched_images(
    batches: Sequence[list[Item]], images: ItemImages, workers: int, preload_all: bool
) -> Iterator[list[Image.Image]]:
    """Each batch's images, loaded by ``workers`` threads: all of them up front with
    ``preload_all``, else the next batch while the caller works on the current one."""
    with ThreadPoolExecutor(max(1, workers)) as pool:

        def load(batch: list[Item]):
            return pool.map(lambda item: images(item.item_id), batch)

        if preload_all:
            everything = [list(load(batch)) for batch in batches]
            yield from everything
            return
        upcoming = load(batches[0]) if batches else None
        for index in range(len(batches)):
            current = list(upcoming)
            if index + 1 < len(batches):
                upcoming = load(batches[index + 1])
            yield current


def _generate_batch(
    generate: Callable[[list[Item], list[Image.Image]], list[str]],
    batch: list[Item],
    images: list[Image.Image],
) -> list[str]:
    """The batch at once or, if that fails (out of memory, one bad image), item by item."""
    try:
        return generate(batch, images)
    except Exception as error:  # noqa: BLE001 - any failure: retry the items one by one
        log.warning(
            "batch of items %s failed (%s: %s); generating them one by one",
            [item.item_id for item in batch],
            type(error).__name__,
            error,
        )
        return [generate([item], [image])[0] for item, image in zip(batch, images, strict=True)]


# ---- the models -------------------------------------------------------------------------------


def load_generator(
    settings: CaptionSettings | SummarySettings,
) -> Callable[[list[Item], list[Image.Image]], list[str]]:
    if isinstance(settings, SummarySettings):
        return Qwen3VLSummariser(settings)
    if settings.backend == "lavis":
        return LavisCaptioner(settings)
    return Blip2Captioner(settings)


class Blip2Captioner:
    """BLIP-2 captions through transformers (the Salesforce weights LAVIS uses)."""

    def __init__(self, settings: CaptionSettings):
        import torch
        from transformers import Blip2ForConditionalGeneration, Blip2Processor

        from seqrerank.distributed import device
        from seqrerank.hub import from_cache

        dtype = torch.float16 if device().type == "cuda" else torch.float32
        with from_cache(settings.model_name):
            self.model = Blip2ForConditionalGeneration.from_pretrained(
                settings.model_name, dtype=dtype, device_map={"": device()}
            ).eval()
            self.processor = Blip2Processor.from_pretrained(settings.model_name)
        self.max_tokens = settings.max_tokens

    def __call__(self, items: list[Item], images: list[Image.Image]) -> list[str]:
        import torch

        inputs = self.processor(images=images, return_tensors="pt").to(self.model.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_tokens, do_sample=False)
        texts = self.processor.batch_decode(out, skip_special_tokens=True)
        return [" ".join(text.split()) for text in texts]


class LavisCaptioner:
    """BLIP-2 captions through Salesforce LAVIS, for users who want its exact pipeline. LAVIS
    pins transformers 4.26, so this runs only in its own environment
    (``envs/captions-lavis.yaml``)."""

    def __init__(self, settings: CaptionSettings):
        from lavis.models import load_model_and_preprocess

        from seqrerank.distributed import device

        # model_name is LAVIS's "<name>:<type>", e.g. "blip2_opt:caption_coco_opt2.7b".
        name, _, model_type = settings.model_name.partition(":")
        self.model, self.preprocess, _ = load_model_and_preprocess(
            name=name,
            model_type=model_type or "caption_coco_opt2.7b",
            is_eval=True,
            device=device(),
        )
        self.max_tokens = settings.max_tokens

    def __call__(self, items: list[Item], images: list[Image.Image]) -> list[str]:
        import torch

        batch = torch.stack([self.preprocess["eval"](image) for image in images])
        batch = batch.to(next(self.model.parameters()).device)
        return self.model.generate({"image": batch}, max_length=self.max_tokens)


class Qwen3VLSummariser:
    """Semantic summaries written by Qwen3-VL from each item's image and title, in batches
    padded on the left; optional 4-bit weights and torch.compile."""

    def __init__(self, settings: SummarySettings):
        from seqrerank.llm.loading import LoadSettings, load_pretrained

        self.model, self.processor = load_pretrained(
            LoadSettings(
                model_name=settings.model_name,
                vision=True,
                loader="transformers",
                use_quantization=settings.use_quantization,
                use_torch_compile=settings.use_torch_compile,
            )
        )
        self.model.eval()
        self.max_tokens = settings.max_tokens

    def __call__(self, items: list[Item], images: list[Image.Image]) -> list[str]:
        import torch

        texts = [
            self.processor.apply_chat_template(
                [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image"},
                            {"type": "text", "text": SUMMARY_PROMPT.format(title=item.title)},
                        ],
                    }
                ],
                add_generation_prompt=True,
                tokenize=False,
            )
            for item in items
        ]
        inputs = self.processor(text=texts, images=images, return_tensors="pt", padding=True)
        inputs = inputs.to(self.model.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_tokens, do_sample=False)
        answers = out[:, inputs["input_ids"].shape[1] :]
        return [
            " ".join(t.split())
            for t in self.processor.batch_decode(answers, skip_special_tokens=True)
        ]
