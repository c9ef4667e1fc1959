"""Item features, one matrix per modality, as the methods read them.

A feature file ``results/<dataset>/features/<modality>.pt`` (written by
:mod:`seqrerank.encoders`) holds ``values`` [num_items + 1, dim] (row 0 is padding; embeddings are
L2-normalised), ``present`` (False for an item missing the modality, whose row is zeros), a
description of the encoder and a fingerprint of everything the values were computed from.

Only torch is needed here: the methods' environments read features without the encoders.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from seqrerank.registry import FEATURE_SOURCES, MODALITIES

log = logging.getLogger("seqrerank.features")


class FeatureError(ValueError):
    """A requested item feature cannot be computed or loaded."""


@dataclass(frozen=True)
class ItemFeatures:
    modality: str
    values: torch.Tensor
    """[num_items + 1, dim] float32; row 0 (padding) and rows of items without it are zeros."""
    present: torch.Tensor
    """[num_items + 1] bool."""
    encoder: dict[str, Any]

    @property
    def dim(self) -> int:
        return self.values.shape[1]

    @classmethod
    def from_saved(cls, saved: dict[str, Any]) -> ItemFeatures:
        """The features of a loaded feature file."""
        return cls(saved["modality"], saved["values"], saved["present"], saved["encoder"])

    def shuffled(self, generator: torch.Generator) -> ItemFeatures:
        """The same feature rows given to other items: a control that breaks the item-feature
        link and keeps everything else."""
        order = torch.randperm(len(self.values) - 1, generator=generator) + 1
        order = torch.cat([torch.zeros(1, dtype=torch.long), order])
        return ItemFeatures(self.modality, self.values[order], self.present[order], self.encoder)


def read_feature_file(path: Path) -> dict[str, Any]:
    """The saved contents of a feature file: tensors and plain values only (``weights_only``),
    so that a file from elsewhere cannot run code when it is read."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise FeatureError(
            f"{path} is not a feature file of the workflow (it holds more than tensors and plain "
            f"values, or is damaged), so it was not loaded: delete it and rebuild it "
            f"(snakemake {path})"
        ) from e


def load_item_features(path: str | Path, num_items: int) -> ItemFeatures:
    path = Path(path)
    if not path.exists():
        modality = path.stem
        raise FeatureError(
            f"{path} does not exist: build it with the workflow's item_features rule "
            f"(snakemake {path}); the dataset needs {FEATURE_SOURCES.get(modality, 'that feature')}"
        )
    features = ItemFeatures.from_saved(read_feature_file(path))
    if len(features.values) != num_items + 1:
        raise FeatureError(
            f"{path} has {len(features.values) - 1} items but the dataset has {num_items}: "
            "it belongs to an older preparation of the data; delete it to rebuild it"
        )
    return features


def load_feature_files(paths: Mapping[str, str | Path], num_items: int) -> dict[str, ItemFeatures]:
    return {modality: load_item_features(path, num_items) for modality, path in paths.items()}


def feature_inputs(named_inputs: Mapping[str, Any]) -> dict[str, Path]:
    """The feature files among a rule's named inputs (``<modality>_features``), by modality."""
    return {
        name.removesuffix("_features"): Path(path)
        for name, path in named_inputs.items()
        if name.endswith("_features")
    }


def require_features(
    method: str,
    features: Mapping[str, ItemFeatures] | None,
    modalities: tuple[str, ...] = MODALITIES,
) -> dict[str, ItemFeatures]:
    """The features among ``modalities`` that a multimodal method was given; a clear error,
    naming the dataset settings that provide them, when it was given none of them."""
    chosen = {modality: f for modality, f in (features or {}).items() if modality in modalities}
    if not chosen:
        sources = "; ".join(f"{modality}: {FEATURE_SOURCES[modality]}" for modality in modalities)
        raise FeatureError(
            f"{method} needs item features and was given none. A dataset provides them with "
            f"its settings ({sources}); the workflow then builds them with the item_features rule"
        )
    return chosen
