"""Building a method's model from its registry name, and its model file (``model.pt``).

A model file holds the method's name, its parameters (``methods.<name>.model``) and the weights
that trained (for an LLM reranker, the adapter): everything else is rebuilt from the dataset and
the pretrained weights, so a file is small even for a 7B reranker. It holds tensors and plain
values only, read back with ``weights_only``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from seqrerank.candidates import RankedLists
from seqrerank.data.dataset import SequenceData
from seqrerank.data.images import ItemImages
from seqrerank.features import ItemFeatures
from seqrerank.io import atomic_path
from seqrerank.methods.base import Recommender, check_params
from seqrerank.registry import load_method, method_spec
from seqrerank.training import seed_everything


def build_model(
    method: str,
    data: SequenceData,
    params: Mapping[str, Any],
    seed: int,
    *,
    items: pd.DataFrame | None = None,
    features: Mapping[str, ItemFeatures] | None = None,
    images: ItemImages | None = None,
    retrieved: Mapping[str, Mapping[str, RankedLists]] | None = None,
) -> Recommender:
    """A fresh model of ``method`` for ``data``: its initial weights drawn from ``seed``; the
    item table, features and images for the methods that read them, and other models' exported
    lists (``retrieved``, by source and split) for those whose registry entry ``reads_lists``
    (ignored for the others)."""
    cls = load_method(method)
    check_params(cls, dict(params), where=f"config methods.{method}.model")
    seed_everything(seed)
    lists = {"retrieved": retrieved} if method_spec(method).reads_lists else {}
    return cls.from_data(data, items=items, features=features, images=images, **lists, **params)


def save_model(model: Recommender, method: str, params: Mapping[str, Any], path: Path) -> None:
    weights = {name: value.cpu() for name, value in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"method": method, "params": dict(params), "state_dict": weights}, tmp)


def load_model(
    path: Path,
    data: SequenceData,
    *,
    items: pd.DataFrame | None = None,
    features: Mapping[str, ItemFeatures] | None = None,
    images: ItemImages | None = None,
    retrieved: Mapping[str, Mapping[str, RankedLists]] | None = None,
) -> Recommender:
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(
        saved["method"],
        data,
        saved["params"],
        0,
        items=items,
        features=features,
        images=images,
        retrieved=retrieved,
    )
    model.load_state_dict(saved["state_dict"])
    return model.eval()
