"""Ranked item lists: Stage 1's exported candidates, ground-truth candidate sets, reranked lists.

All share one CSV layout, one row per (split, user): ``split,user,target,items,scores`` where
``items`` and ``scores`` are space-separated and item 0 pads a short list.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from seqrerank.data.dataset import SequenceData
from seqrerank.io import atomic_path
from seqrerank.metrics import target_ranks


@dataclass(frozen=True)
class RankedLists:
    split: str
    users: np.ndarray  # [U]
    targets: np.ndarray  # [U]
    items: np.ndarray  # [U, K], best first (candidate order for unscored lists)
    scores: np.ndarray  # [U, K] float32; NaN where a list carries no scores

    def __len__(self) -> int:
        return len(self.users)

    def head(self, k: int) -> RankedLists:
        return RankedLists(
            self.split, self.users, self.targets, self.items[:, :k], self.scores[:, :k]
        )

    def first_users(self, count: int) -> RankedLists:
        return RankedLists(
            self.split,
            self.users[:count],
            self.targets[:count],
            self.items[:count],
            self.scores[:count],
        )


def write_ranked_lists(path: str | Path, lists: list[RankedLists]) -> None:
    frames = [
        pd.DataFrame(
            {
                "split": part.split,
                "user": part.users,
                "target": part.targets,
                "items": [" ".join(map(str, row)) for row in part.items],
                "scores": [" ".join(f"{s:.6g}" for s in row) for row in part.scores],
            }
        )
        for part in lists
    ]
    with atomic_path(path) as tmp:
        pd.concat(frames).to_csv(tmp, index=False)


def write_ranks(path: str | Path, lists: list[RankedLists]) -> None:
    """Per-user rank of the target (0 = not in the list), for significance tests."""
    frame = pd.concat(
        pd.DataFrame(
            {
                "split": part.split,
                "user": part.users,
                "rank": target_ranks(part.items, part.targets),
            }
        )
        for part in lists
    )
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def read_ranked_lists(path: str | Path) -> dict[str, RankedLists]:
    frame = pd.read_csv(path, dtype={"items": str, "scores": str}, keep_default_na=False)
    out = {}
    for split, part in frame.groupby("split", sort=False):
        items = np.array([np.array(row.split(), dtype=np.int64) for row in part["items"]])
        scores = np.array([np.array(row.split(), dtype=np.float32) for row in part["scores"]])
        out[str(split)] = RankedLists(
            str(split), part["user"].to_numpy(), part["target"].to_numpy(), items, scores
        )
    return out


def forbidden_items(data: SequenceData, lists: RankedLists) -> np.ndarray:
    """[users, K] True where a list holds an item that :func:`seqrerank.evaluation.retrieve`
    never puts there: one of the user's input history for ``lists.split`` (unless the dataset
    keeps repeats), and in ``train`` lists the user's val or test item (the task's future) unless
    it is the target itself."""
    width = data.num_items + 1
    rows = lists.users - 1
    keys = rows[:, None] * width + lists.items
    banned = []
    if not data.repeats:
        inputs = data.inputs(lists.split)
        owner = np.repeat(np.arange(data.num_users), [len(seq) for seq in inputs])
        banned.append(owner * width + np.concatenate(inputs))
    if lists.split == "train":
        later = data.val_and_test_items()[rows]
        later = np.where(later == lists.targets[:, None], 0, later)
        banned.append((rows[:, None] * width + later)[later > 0])
    if not banned:
        return np.zeros(lists.items.shape, dtype=bool)
    return np.isin(keys, np.concatenate(banned)) & (lists.items > 0)


def retrieved_inputs(named_inputs: Mapping[str, Any]) -> dict[str, Path]:
    """The exported lists among a rule's named inputs (``retrieved_<source>``), by source."""
    return {
        name.removeprefix("retrieved_"): Path(path)
        for name, path in named_inputs.items()
        if name.startswith("retrieved_")
    }


def load_retrieved(paths: Mapping[str, str | Path]) -> dict[str, dict[str, RankedLists]]:
    """The exported lists of each source (``retrieved.csv``), by source and split."""
    return {source: read_ranked_lists(path) for source, path in paths.items()}


def sample_ground_truth(
    data: SequenceData, split: str, num_negatives: int, seed: int
) -> RankedLists:
    """The target plus ``num_negatives`` items drawn uniformly from those the user never
    interacted with, in a random order (so a model that ties scores gains nothing from position)."""
    if data.num_items - 1 < num_negatives:
        raise ValueError(f"{num_negatives} negatives requested but only {data.num_items} items")
    rng = np.random.default_rng([seed, ("train", "val", "test").index(split)])
    targets = data.targets(split)
    rows = np.zeros((data.num_users, num_negatives + 1), dtype=np.int64)
    for u, seq in enumerate(data.full_sequences()):
        seen = set(seq.tolist())
        negatives: list[int] = []
        while len(negatives) < num_negatives:
            for item in rng.integers(1, data.num_items + 1, size=2 * num_negatives).tolist():
                if item not in seen and len(negatives) < num_negatives:
                    seen.add(item)
                    negatives.append(item)
        row = np.array([targets[u], *negatives])
        rows[u] = row[rng.permutation(len(row))]
    scores = np.full(rows.shape, np.nan, dtype=np.float32)
    return RankedLists(split, data.users, targets, rows, scores)


@dataclass(frozen=True)
class CandidateTraining:
    """What a reranker that trains on candidate lists consumes (``trains_on="candidates"``): the
    dataset, and the lists of the ``train`` task (Stage 1's, or the target plus random items)."""

    data: SequenceData
    lists: RankedLists

    def examples(
        self, size: int, generator: torch.Generator
    ) -> list[tuple[np.ndarray, np.ndarray, int]]:
        """Per user in ``lists``: (history, candidates, index of the target among them). The
        candidates are the target and the first ``size - 1`` other items of the user's list,
        shuffled by ``generator`` (a fresh order each epoch, so no position gives the answer)."""
        inputs = self.data.inputs("train")
        out = []
        for user, target, row in zip(
            self.lists.users, self.lists.targets, self.lists.items, strict=True
        ):
            negatives = row[(row != target) & (row > 0)][: size - 1]
            candidates = np.append(target, negatives)
            order = torch.randperm(len(candidates), generator=generator).numpy()
            out.append((inputs[user - 1], candidates[order], int(np.argmin(order))))
        return out
