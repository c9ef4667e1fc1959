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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from seqrerank.data.layout import DATASET_FILES, IMAGES_FOLDER, ITEM_TEXT_FILES

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
            return [
                np.concatenate((seq, (v,))) for seq, v in zip(self.train, self.val, strict=True)
            ]
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


@dataclass(frozen=True)
class DatasetFiles:
    """The files of a prepared dataset that a step reads, each named: the workflow hands over
    exactly the files its rule declares, so the package never guesses a file name."""

    train: Path
    val: Path
    test: Path
    items: Path
    stats: Path
    texts: Mapping[str, Path] = field(default_factory=dict)
    """Generated item texts by item-table column (``ITEM_TEXT_FILES``)."""
    images: Path | None = None
    """The folder of the item images that the item table's ``image`` column names."""

    @classmethod
    def in_folder(
        cls, folder: str | Path, texts: Iterable[str] = (), images: bool = False
    ) -> DatasetFiles:
        """The standard files of a prepared dataset folder (what :func:`prepare_dataset` writes
        there), with the generated ``texts`` (by column) and the images folder if asked."""
        folder = Path(folder)
        return cls(
            **{role: folder / name for role, name in DATASET_FILES.items()},
            texts={column: folder / ITEM_TEXT_FILES[column] for column in texts},
            images=folder / IMAGES_FOLDER if images else None,
        )

    def all(self) -> list[Path]:
        """Every file and folder above, in a fixed order (what a run that reads them learns
        from)."""
        named = [self.train, self.val, self.test, self.items, self.stats]
        return [*named, *(self.texts[c] for c in sorted(self.texts)), *filter(None, [self.images])]


def as_dataset_files(dataset: DatasetFiles | str | Path) -> DatasetFiles:
    """``dataset`` itself, or the standard files of a prepared dataset folder with whatever
    generated texts and images it holds: a convenience for the tests and benchmarks, which work
    on folders (the workflow names every file)."""
    if isinstance(dataset, DatasetFiles):
        return dataset
    folder = Path(dataset)
    texts = [column for column, name in ITEM_TEXT_FILES.items() if (folder / name).exists()]
    return DatasetFiles.in_folder(folder, texts, images=(folder / IMAGES_FOLDER).is_dir())


def _read_lines(path: Path) -> list[list[int]]:
    with open(path) as handle:
        return [[int(tok) for tok in line.split()] for line in handle if line.strip()]


def load_sequences(dataset: DatasetFiles | str | Path) -> SequenceData:
    files = as_dataset_files(dataset)
    train_rows = _read_lines(files.train)
    val = dict(_read_lines(files.val))
    test = dict(_read_lines(files.test))
    users = [row[0] for row in train_rows]
    if users != list(range(1, len(users) + 1)):
        raise ValueError(f"{files.train}: users must be numbered 1..U in order")
    num_items = len(pd.read_csv(files.items, usecols=["item_id"]))
    stats = json.loads(Path(files.stats).read_text())
    return SequenceData(
        num_items=num_items,
        train=[np.array(row[1:], dtype=np.int64) for row in train_rows],
        val=np.array([val[u] for u in users], dtype=np.int64),
        test=np.array([test[u] for u in users], dtype=np.int64),
        repeats=stats.get("repeats") == "keep",
    )


def load_items(dataset: DatasetFiles | str | Path) -> pd.DataFrame:
    """The item table, indexed by item id, with empty strings (not NaN) for missing text, and a
    column for each generated item text of ``dataset.texts``."""
    files = as_dataset_files(dataset)
    items = pd.read_csv(files.items, keep_default_na=False).set_index("item_id")
    for column, path in files.texts.items():
        texts = pd.read_csv(path, keep_default_na=False).set_index("item_id")
        items[column] = texts[column].reindex(items.index, fill_value="")
    return items


def dataset_inputs(named: Mapping[str, Any]) -> DatasetFiles:
    """The dataset files among a workflow rule's named inputs: ``train``, ``val``, ``test``,
    ``item_table`` (Snakemake reserves ``items``), ``stats``, ``generated_<column>`` for a
    generated item text and ``images`` for the images folder."""
    texts = {
        name.removeprefix("generated_"): Path(path)
        for name, path in named.items()
        if name.startswith("generated_")
    }
    images = named.get("images")
    return DatasetFiles(
        train=Path(named["train"]),
        val=Path(named["val"]),
        test=Path(named["test"]),
        items=Path(named["item_table"]),
        stats=Path(named["stats"]),
        texts=texts,
        images=Path(images) if images else None,
    )
