"""Loading a prepared dataset (the files written by :func:`seqrerank.data.prepare.prepare_dataset`).

Users are numbered 1..U and items 1..N; item 0 is padding. The leave-one-out split gives three
prediction tasks per user, each an (input history, target) pair:

* ``train``: all training items but the last -> the last training item (used to form reranker
  training candidates; every model has seen this target during training),
* ``val``: the training items -> the second-to-last item,
* ``test``: the training items plus the validation item -> the last item.

A dataset prepared with ``repeats: drop`` (the default) never repeats an item within a user's
sequence, so ranking masks the user's history; with ``repeats: keep`` a target may repeat a
history item, and ranking masks none (``repeats``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")
EVAL_SPLITS = ("val", "test")


@dataclass(frozen=True)
class SequenceData:
    num_items: int
    train: list[np.ndarray]
    """Training sequence of user ``u`` at index ``u - 1``, in time order."""
    val: np.ndarray
    test: np.ndarray
    repeats: bool = False
    """Whether a user's sequence may hold an item twice (prepared with ``repeats: keep``)."""

    @property
    def num_users(self) -> int:
        return len(self.train)

    @property
    def users(self) -> np.ndarray:
        return np.arange(1, self.num_users + 1)

    def inputs(self, split: str) -> list[np.ndarray]:
        """The history each user's model input is built from, for ``split``."""
        if split == "train":
            return [seq[:-1] for seq in self.train]
        if split == "val":
            return self.train
        if split == "test":
            return [np.append(seq, v) for seq, v in zip(self.train, self.val, strict=True)]
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")

    def targets(self, split: str) -> np.ndarray:
        if split == "train":
            return np.array([seq[-1] for seq in self.train])
        if split == "val":
            return self.val
        if split == "test":
            return self.test
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")

    def val_and_test_items(self) -> np.ndarray:
        """[users, 2]: the items after the ``train`` task's target, which no list built for
        training may contain."""
        return np.stack([self.val, self.test], axis=1)

    def full_sequences(self) -> list[np.ndarray]:
        return [
            np.append(seq, [v, t])
            for seq, v, t in zip(self.train, self.val, self.test, strict=True)
        ]


def _read_lines(path: Path) -> list[list[int]]:
    with open(path) as handle:
        return [[int(tok) for tok in line.split()] for line in handle if line.strip()]


def load_sequences(data_dir: str | Path) -> SequenceData:
    data_dir = Path(data_dir)
    train_rows = _read_lines(data_dir / "train.txt")
    val = dict(_read_lines(data_dir / "val.txt"))
    test = dict(_read_lines(data_dir / "test.txt"))
    users = [row[0] for row in train_rows]
    if users != list(range(1, len(users) + 1)):
        raise ValueError(f"{data_dir / 'train.txt'}: users must be numbered 1..U in order")
    num_items = len(pd.read_csv(data_dir / "items.csv", usecols=["item_id"]))
    stats = json.loads((data_dir / "stats.json").read_text())
    return SequenceData(
        num_items=num_items,
        train=[np.array(row[1:], dtype=np.int64) for row in train_rows],
        val=np.array([val[u] for u in users], dtype=np.int64),
        test=np.array([test[u] for u in users], dtype=np.int64),
        repeats=stats.get("repeats") == "keep",
    )


# Item texts that data rules generate into their own files beside items.csv (column -> file).
ITEM_TEXT_FILES = {
    "caption": "captions.csv",
    "semantic_summary": "semantic_summaries.csv",
    "semantic_summary_small": "semantic_summaries_small.csv",
}


def dataset_files(data_dir: str | Path) -> list[Path]:
    """Every file of a prepared dataset that methods read: the splits, the item table, its stats
    and the generated item texts that exist (see :func:`load_items`)."""
    data_dir = Path(data_dir)
    names = ["train.txt", "val.txt", "test.txt", "items.csv", "stats.json"]
    generated = [name for name in ITEM_TEXT_FILES.values() if (data_dir / name).exists()]
    return [data_dir / name for name in [*names, *generated]]


def load_items(data_dir: str | Path) -> pd.DataFrame:
    """The item table, indexed by item id, with empty strings (not NaN) for missing text, and a
    column for each generated item text that exists (``ITEM_TEXT_FILES``)."""
    data_dir = Path(data_dir)
    items = pd.read_csv(data_dir / "items.csv", keep_default_na=False).set_index("item_id")
    for column, name in ITEM_TEXT_FILES.items():
        if (data_dir / name).exists():
            texts = pd.read_csv(data_dir / name, keep_default_na=False).set_index("item_id")
            items[column] = texts[column].reindex(items.index, fill_value="")
    return items
