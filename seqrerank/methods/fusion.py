"""Fusion: one candidate list per user, merged from the exported lists of several trained models.

A retriever of the grid like any other (its ``retrieved.csv`` holds the top-K with scores for
the train, val and test tasks), built from the lists its ``sources`` exported: the other retrievers
of the grid (LRURec, BERT4Rec, BM3, popularity, ...; outside the workflow, any full-ranking model
exported with :func:`seqrerank.pipeline.run_export`). Its Recall@K is the ceiling of every reranker
above it, and it is usually above each source's (the sources' hits differ).

Methods (``method``):

* ``rrf``, reciprocal rank fusion (Cormack et al., SIGIR 2009): an item's score is
  ``sum_s weight_s / (rrf_k + rank_s)`` over the sources whose list holds it (1-based ranks; a
  source without it adds nothing). Needs no score calibration.
* ``minmax`` / ``zscore``, score fusion: each source's scores are normalised within the user's
  list (to [0, 1], or to zero mean and unit variance) and summed with the weights; an item absent
  from a source's list gets that list's lowest normalised score from it (the best it could have
  had is below the list's last). Scores are reported relative to that floor.

Ties go to the item with the better rank in any source, then the lower item id. The merged
lists keep what their sources guarantee (no history item; no val/test item in a train-task
list), and this is checked: a source list that breaks it is an error naming the source.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from seqrerank.candidates import RankedLists, forbidden_items
from seqrerank.data.dataset import SequenceData
from seqrerank.data.images import ItemImages
from seqrerank.features import ItemFeatures
from seqrerank.methods.base import Recommender

METHODS = ("rrf", "minmax", "zscore")


class Fusion(Recommender):
    trainable = False

    def __init__(
        self,
        num_items: int,
        sources: Sequence[str] = (),
        weights: Sequence[float] | None = None,
        method: str = "rrf",
        rrf_k: float = 60.0,
    ):
        super().__init__()
        if not sources:
            raise ValueError(
                "fusion needs the models whose lists it merges: methods.fusion.model.sources, "
                "e.g. [lrurec, bert4rec]"
            )
        if method not in METHODS:
            raise ValueError(f"fusion method {method!r}; expected one of {', '.join(METHODS)}")
        weights = [1.0] * len(sources) if weights is None else [float(w) for w in weights]
        if len(weights) != len(sources):
            raise ValueError(
                f"fusion has {len(sources)} sources but {len(weights)} weights; give one weight "
                "per source (methods.fusion.model.weights)"
            )
        self.num_items = num_items
        self.sources = list(sources)
        self.weights = weights
        self.method = method
        self.rrf_k = float(rrf_k)
        self.retrieved: Mapping[str, Mapping[str, RankedLists]] = {}

    @classmethod
    def from_data(
        cls,
        data: SequenceData,
        items: pd.DataFrame | None = None,
        features: Mapping[str, ItemFeatures] | None = None,
        images: ItemImages | None = None,
        retrieved: Mapping[str, Mapping[str, RankedLists]] | None = None,
        **params: Any,
    ) -> Fusion:
        model = cls(data.num_items, **params)
        model.retrieved = retrieved or {}
        return model

    def ranked_lists(self, data: SequenceData, split: str, top_k: int) -> RankedLists:
        parts = [source_lists(self.retrieved, name, split, data) for name in self.sources]
        items, scores = fuse(
            parts, self.weights, self.method, self.rrf_k, min(top_k, data.num_items)
        )
        fused = RankedLists(split, data.users, data.targets(split), items, scores)
        return fused


def source_lists(
    retrieved: Mapping[str, Mapping[str, RankedLists]],
    name: str,
    split: str,
    data: SequenceData,
) -> RankedLists:
    """The lists that source ``name`` exported for ``split``, checked against the dataset: one
    row per user in order, the split's targets, and nothing a retriever never lists."""
    if name not in retrieved:
        given = ", ".join(sorted(retrieved)) or "none"
        raise ValueError(
            f"no exported lists of source {name!r} were given (given: {given}); the workflow "
            f"passes each source's retrieved.csv as the named input retrieved_{name}"
        )
    if split not in retrieved[name]:
        raise ValueError(f"the lists of source {name!r} have no {split!r} split")
    lists = retrieved[name][split]
    if not np.array_equal(lists.users, data.users) or not np.array_equal(
        lists.targets, data.targets(split)
    ):
        raise ValueError(
            f"the {split} lists of source {name!r} are not this dataset's (other users or "
            "targets): they belong to another preparation of the data"
        )
    bad = forbidden_items(data, lists)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"the {split} lists of source {name!r} hold items no retriever may list there "
            f"({int(bad.sum())} entries, e.g. user {lists.users[row]}, item "
            f"{lists.items[row, col]}: its history, or in a train-task list its val/test item)"
        )
    return lists


def fuse(
    parts: Sequence[RankedLists],
    weights: Sequence[float],
    method: str,
    rrf_k: float,
    top_k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Items [users, top_k] and their fused scores (float32, -inf for padding) of the rows of
    ``parts`` (the same users, in the same order), merged as the module describes."""
    num_users = len(parts[0])
    width = int(max(part.items.max(initial=0) for part in parts)) + 1
    keys, gains, ranks = [], [], []
    for part, weight in zip(parts, weights, strict=True):
        listed = part.items > 0
        rank = np.broadcast_to(np.arange(1, part.items.shape[1] + 1), part.items.shape)
        gain = weight * _gains(part, listed, method, rrf_k)
        row = np.broadcast_to(np.arange(num_users)[:, None], part.items.shape)
        keys.append((row * width + part.items)[listed])
        gains.append(gain[listed])
        ranks.append(rank[listed])
    keys_all = np.concatenate(keys)
    unique, inverse = np.unique(keys_all, return_inverse=True)
    fused = np.bincount(inverse, weights=np.concatenate(gains), minlength=len(unique))
    best_rank = np.full(len(unique), np.iinfo(np.int64).max)
    np.minimum.at(best_rank, inverse, np.concatenate(ranks))
    rows, items = unique // width, unique % width
    order = np.lexsort((items, best_rank, -fused, rows))
    rows, items, fused = rows[order], items[order], fused[order]
    starts = np.searchsorted(rows, np.arange(num_users))
    position = np.arange(len(rows)) - starts[rows]
    keep = position < top_k
    out_items = np.zeros((num_users, top_k), dtype=np.int64)
    out_scores = np.full((num_users, top_k), -np.inf, dtype=np.float32)
    out_items[rows[keep], position[keep]] = items[keep]
    out_scores[rows[keep], position[keep]] = fused[keep]
    return out_items, out_scores


def _gains(part: RankedLists, listed: np.ndarray, method: str, rrf_k: float) -> np.ndarray:
    """Each listed item's contribution before its source's weight."""
    if method == "rrf":
        ranks = np.arange(1, part.items.shape[1] + 1, dtype=np.float64)
        return np.broadcast_to(1.0 / (rrf_k + ranks), part.items.shape)
    scores = part.scores.astype(np.float64)
    usable = listed & np.isfinite(scores)
    if not usable[listed].all():
        raise ValueError(
            f"score fusion ({method}) needs every listed item's score; a {part.split} list has "
            "none (a list without scores): use method: rrf"
        )
    count = np.maximum(usable.sum(axis=1, keepdims=True), 1)
    low = np.min(np.where(usable, scores, np.inf), axis=1, keepdims=True)
    if method == "minmax":
        high = np.max(np.where(usable, scores, -np.inf), axis=1, keepdims=True)
        span = np.where(high > low, high - low, 1.0)
        # A row without listed items has low = inf: its zero gains are masked below.
        normalised = (scores - np.where(np.isfinite(low), low, 0.0)) / span
    else:
        mean = np.where(usable, scores, 0.0).sum(axis=1, keepdims=True) / count
        spread = np.where(usable, (scores - mean) ** 2, 0.0).sum(axis=1, keepdims=True) / count
        std = np.sqrt(spread)
        normalised = (scores - mean) / np.where(std > 0, std, 1.0)
    floor = np.min(np.where(usable, normalised, np.inf), axis=1, keepdims=True)
    return np.where(usable, normalised - np.where(np.isfinite(floor), floor, 0.0), 0.0)
