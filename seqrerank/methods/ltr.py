"""LTR: a learning-to-rank reranker, LightGBM's LambdaRank over list features.

The classical second stage that an LLM reranker has to beat: gradient-boosted trees over the
features of :mod:`seqrerank.ranking_features` (its sources' scores and ranks, popularity,
transitions and co-occurrence with the last items, similarity in every modality), trained with
the LambdaRank objective, one query per user whose target is in the list (a list without it has
no gradient), early-stopped by the training settings' metric over all the users it is measured
on (a user whose target is not listed counts as a miss).

What it learns from (``train_task``):

* ``val`` (the default), cross-fitted: the users are split into ``folds`` folds (by the seed);
  fold model ``f`` learns from the ``val``-task lists of the other folds, and all fold models
  train in lockstep, stopped at the round where their mean metric on their held-out folds is
  best (LightGBM's ``cv``). A ``val`` list is scored by the model that did not learn from its
  user (out of fold), every other list by the mean of the fold models. No user's test item is
  in a list it learns from (it is removed from the ``val`` lists before training).
* ``train``: the ``train``-task lists, early-stopped on the ``val``-task lists. Stage 1 models
  were trained on the ``train``-task targets, so their lists for that task are far easier than
  at test time (LRURec on Amazon Beauty: Recall@10 .48 on the ``train`` task, .12 on ``val``),
  and a ranker learns to trust them: on Beauty it falls below its input order. It is right only
  for candidate sources that did not train on those targets.

It does not train in the shared loop (there are no torch parameters to step): it is registered
``trains_on="candidates"`` with ``trains_itself = True``, and the pipeline hands it the lists
(:meth:`fit_lists`). Of the training settings it uses the seed and the metric; the booster's
own settings are model parameters (``methods.ltr.model``). Scoring needs the list's task, so it
scores whole lists (:meth:`score_lists`).

The boosters are kept in the model's state dict as text (UTF-8 JSON in a uint8 tensor, the
module's extra state) with the feature names and the users' folds, so ``model.pt`` holds tensors
and plain values only and loads with ``weights_only``; the feature names are checked when it
scores.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import torch

from seqrerank.candidates import RankedLists
from seqrerank.data.dataset import SequenceData
from seqrerank.data.images import ItemImages
from seqrerank.features import ItemFeatures
from seqrerank.methods.base import Recommender
from seqrerank.metrics import metrics_from_ranks
from seqrerank.ranking_features import ListFeatures
from seqrerank.training import TrainSettings

log = logging.getLogger("seqrerank")
TRAIN_TASKS = ("val", "train")


class LTR(Recommender):
    trainable = False  # not by the shared loop
    trains_itself = True

    def __init__(
        self,
        num_items: int,
        sources: Sequence[str] = (),
        train_task: str = "val",
        folds: int = 5,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        min_data_in_leaf: int = 50,
        feature_fraction: float = 0.8,
        bagging_fraction: float = 0.8,
        lambda_l2: float = 1.0,
        truncation_level: int = 20,
        max_rounds: int = 1000,
        early_stopping_rounds: int = 50,
        history_window: int = 10,
        cooccurrence_window: int = 5,
    ):
        super().__init__()
        if train_task not in TRAIN_TASKS:
            raise ValueError(f"ltr train_task {train_task!r}; expected one of {TRAIN_TASKS}")
        if train_task == "val" and folds < 2:
            raise ValueError("ltr with train_task: val needs folds >= 2 (it is cross-fitted)")
        self.num_items = num_items
        self.sources = list(sources)
        self.train_task = train_task
        self.folds = folds
        self.booster_params = {
            "objective": "lambdarank",
            "learning_rate": learning_rate,
            "num_leaves": num_leaves,
            "min_data_in_leaf": min_data_in_leaf,
            "feature_fraction": feature_fraction,
            "bagging_fraction": bagging_fraction,
            "bagging_freq": 1 if bagging_fraction < 1 else 0,
            "lambda_l2": lambda_l2,
            "lambdarank_truncation_level": truncation_level,
            "metric": "None",  # ours, over all the users measured (fit_lists)
            "deterministic": True,
            "force_col_wise": True,
            "verbosity": -1,
        }
        self.max_rounds = max_rounds
        self.early_stopping_rounds = early_stopping_rounds
        self.history_window = history_window
        self.cooccurrence_window = cooccurrence_window
        self.boosters: list[lgb.Booster] = []
        self.user_folds: np.ndarray | None = None  # [num_users], cross-fitted models only
        self.feature_names: list[str] = []
        self.list_features: ListFeatures | None = None

    @classmethod
    def from_data(
        cls,
        data: SequenceData,
        items: pd.DataFrame | None = None,
        features: Mapping[str, ItemFeatures] | None = None,
        images: ItemImages | None = None,
        retrieved: Mapping[str, Mapping[str, RankedLists]] | None = None,
        **params: Any,
    ) -> LTR:
        model = cls(data.num_items, **params)
        model.list_features = ListFeatures(
            data,
            retrieved or {},
            model.sources,
            features,
            model.history_window,
            model.cooccurrence_window,
        )
        return model

    # --- training -------------------------------------------------------------------------

    def fit_lists(
        self,
        data: SequenceData,
        train: RankedLists,
        val: RankedLists,
        settings: TrainSettings,
    ) -> list[dict]:
        if (train.split, val.split) != ("train", "val"):
            raise ValueError(
                "LTR is given the train-task lists and the val-task lists, "
                f"not {train.split!r} and {val.split!r} lists"
            )
        builder = self._builder()
        started = time.perf_counter()
        if self.train_task == "train":
            tasks = [(Queries.of(builder, train), Queries.of(builder, val))]
            self.user_folds = None
        else:
            folds = np.random.default_rng([settings.seed, 1]).permutation(len(val)) % self.folds
            # No user's test item is a (negative) example: it lies in the val task's future.
            learn = Queries.of(builder, val, drop=data.test[val.users - 1])
            held_out = Queries.of(builder, val)
            tasks = [
                (learn.of_users(folds != fold), held_out.of_users(folds == fold))
                for fold in range(self.folds)
            ]
            self.user_folds = np.zeros(data.num_users, dtype=np.int64)
            self.user_folds[val.users - 1] = folds
        if any(len(learning.rows) == 0 for learning, _ in tasks):
            raise ValueError(f"no {self.train_task}-task list holds its target: nothing to learn")
        history, self.boosters = self._train_in_lockstep(tasks, builder.names, settings)
        self.feature_names = builder.names
        seconds = time.perf_counter() - started
        history[-1]["train_seconds"] = round(seconds, 3)
        best = max(entry["epoch"] for entry in history if entry["best"])
        log.info(
            "LambdaRank on %s-task lists (%d model(s)): %d rounds, best %d, %s %.4f (%.1fs)",
            self.train_task,
            len(self.boosters),
            len(history),
            best,
            settings.metric,
            history[best - 1]["val"][settings.metric],
            seconds,
        )
        return history

    def _train_in_lockstep(
        self,
        tasks: list[tuple[Queries, Queries]],
        names: list[str],
        settings: TrainSettings,
    ) -> tuple[list[dict], list[lgb.Booster]]:
        """One booster per (learning, held-out) pair, trained round by round together and cut
        at the round where their metric over all held-out users is best; the history, one entry
        per round (``loss``: 1 - the metric on the lists learnt from)."""
        metric = settings.metric
        cutoff = int(metric.split("@")[1])
        params = {
            **self.booster_params,
            "seed": settings.seed,
            "num_threads": torch.get_num_threads(),
        }
        boosters, measured = [], {}
        for learning, held_out in tasks:
            learn_set = learning.dataset(names)
            held_set = held_out.dataset(names, reference=learn_set)
            booster = lgb.Booster(params, learn_set)
            booster.add_valid(held_set, "held_out")
            boosters.append(booster)
            measured[id(learn_set)], measured[id(held_set)] = learning, held_out

        def ranks_of(predictions: np.ndarray, dataset: lgb.Dataset) -> tuple[str, float, bool]:
            ranks = measured[id(dataset)].target_ranks(predictions)
            return "hits", metrics_from_ranks(ranks, (cutoff,))[metric] * len(ranks), True

        held_users = sum(held_out.users for _, held_out in tasks)
        learn_users = sum(learning.users for learning, _ in tasks)
        history: list[dict] = []
        best, best_round = float("-inf"), 0
        for round_ in range(1, self.max_rounds + 1):
            held, learnt = 0.0, 0.0
            for booster in boosters:
                booster.update()
                held += booster.eval_valid(ranks_of)[0][2]
                learnt += booster.eval_train(ranks_of)[0][2]
            value = held / max(held_users, 1)
            improved = value > best
            if improved:
                best, best_round = value, round_
            history.append(
                {
                    "epoch": round_,
                    "loss": 1.0 - learnt / max(learn_users, 1),
                    "val": {metric: value},
                    "best": improved,
                }
            )
            if round_ - best_round >= self.early_stopping_rounds:
                break
        kept = [
            lgb.Booster(model_str=booster.model_to_string(num_iteration=best_round))
            for booster in boosters
        ]
        return history, kept

    # --- scoring --------------------------------------------------------------------------

    def score_lists(self, data: SequenceData, candidates: RankedLists) -> np.ndarray:
        if not self.boosters:
            raise ValueError("the LTR reranker is not trained: fit_lists first, or load a model")
        builder = self._builder()
        if builder.names != self.feature_names:
            raise ValueError(
                "the features available now differ from those the model was trained with "
                f"({', '.join(self.feature_names)}): give it the same sources and item features"
            )
        features = builder.matrix(candidates)
        threads = torch.get_num_threads()
        width = candidates.items.shape[1]
        if candidates.split == "val" and self.user_folds is not None:
            # Out of fold: each user by the model that did not learn from the user.
            folds = np.repeat(self.user_folds[candidates.users - 1], width)
            scores = np.zeros(len(features))
            for fold, booster in enumerate(self.boosters):
                chosen = folds == fold
                if chosen.any():
                    scores[chosen] = booster.predict(features[chosen], num_threads=threads)
        else:
            scores = np.mean(
                [booster.predict(features, num_threads=threads) for booster in self.boosters],
                axis=0,
            )
        return scores.reshape(candidates.items.shape)

    def feature_importance(self) -> pd.DataFrame:
        """Per feature: total gain of its splits and their number (summed over the fold
        models), largest gain first."""
        if not self.boosters:
            raise ValueError("the LTR reranker is not trained")
        frame = pd.DataFrame(
            {
                "feature": self.boosters[0].feature_name(),
                "gain": sum(b.feature_importance("gain") for b in self.boosters),
                "splits": sum(b.feature_importance("split") for b in self.boosters),
            }
        )
        frame["gain_share"] = frame["gain"] / max(frame["gain"].sum(), 1e-12)
        return frame.sort_values("gain", ascending=False, kind="stable").reset_index(drop=True)

    def _builder(self) -> ListFeatures:
        if self.list_features is None:
            raise ValueError("build the LTR reranker with from_data (it needs the dataset)")
        return self.list_features

    # --- the model file -------------------------------------------------------------------

    def get_extra_state(self) -> torch.Tensor:
        if not self.boosters:
            return torch.zeros(0, dtype=torch.uint8)
        state = {
            "boosters": [booster.model_to_string() for booster in self.boosters],
            "features": self.feature_names,
            "user_folds": None if self.user_folds is None else self.user_folds.tolist(),
        }
        encoded = json.dumps(state).encode("utf-8")
        return torch.frombuffer(bytearray(encoded), dtype=torch.uint8).clone()

    def set_extra_state(self, state: torch.Tensor) -> None:
        if state.numel() == 0:
            self.boosters, self.feature_names, self.user_folds = [], [], None
            return
        saved = json.loads(bytes(state.numpy().tobytes()).decode("utf-8"))
        self.boosters = [lgb.Booster(model_str=text) for text in saved["boosters"]]
        self.feature_names = list(saved["features"])
        folds = saved["user_folds"]
        self.user_folds = None if folds is None else np.asarray(folds, dtype=np.int64)


@dataclass(frozen=True)
class Queries:
    """The users of candidate lists whose target is listed, as LightGBM queries: their listed
    items' features back to back, labels (1 for the target), query sizes, and each target's
    position within its query. A user without the target in the list adds no gradient and
    counts as a miss (``users`` counts every user measured)."""

    features: np.ndarray
    labels: np.ndarray
    sizes: np.ndarray
    positions: np.ndarray
    rows: np.ndarray
    """The queries' rows in the lists (users without their target listed have none)."""
    users: int

    @classmethod
    def of(
        cls, builder: ListFeatures, lists: RankedLists, drop: np.ndarray | None = None
    ) -> Queries:
        """``drop``: an item per row to leave out of that row's list (the user's test item)."""
        listed = lists.items > 0
        if drop is not None:
            listed &= lists.items != drop[:, None]
        hits = (lists.items == lists.targets[:, None]) & listed
        rows = np.flatnonzero(hits.any(axis=1))
        subset = RankedLists(
            lists.split,
            lists.users[rows],
            lists.targets[rows],
            lists.items[rows],
            lists.scores[rows],
        )
        listed, hits = listed[rows], hits[rows]
        features = builder.matrix(subset)[listed.reshape(-1)]
        return cls(
            features=features,
            labels=hits[listed].astype(np.float32),
            sizes=listed.sum(axis=1),
            positions=np.cumsum(listed, axis=1)[hits] - 1,
            rows=rows,
            users=len(lists),
        )

    def of_users(self, mask: np.ndarray) -> Queries:
        """The queries of the users (rows of the lists) in ``mask``."""
        chosen = mask[self.rows]
        entries = np.repeat(chosen, self.sizes)
        return replace(
            self,
            features=self.features[entries],
            labels=self.labels[entries],
            sizes=self.sizes[chosen],
            positions=self.positions[chosen],
            rows=self.rows[chosen],
            users=int(mask.sum()),
        )

    def dataset(self, names: list[str], reference: lgb.Dataset | None = None) -> lgb.Dataset:
        return lgb.Dataset(
            self.features,
            label=self.labels,
            group=self.sizes,
            feature_name=names,
            reference=reference,
            free_raw_data=False,
            params={"verbosity": -1},
        )

    def target_ranks(self, predictions: np.ndarray) -> np.ndarray:
        """Every measured user's target rank (0: not listed) when each query is sorted by
        ``predictions``, ties in list order as the reranking sorts them."""
        ranks = np.zeros(self.users, dtype=np.int64)  # in no particular order
        if len(self.rows) == 0:
            return ranks
        starts = np.cumsum(self.sizes) - self.sizes
        query = np.repeat(np.arange(len(self.sizes)), self.sizes)
        offset = np.arange(len(predictions)) - starts[query]
        target = predictions[starts + self.positions][query]
        ties_before = (predictions == target) & (offset < self.positions[query])
        ahead = (predictions > target) | ties_before
        counts = np.bincount(query, weights=ahead, minlength=len(self.sizes))
        ranks[: len(self.rows)] = 1 + counts.astype(np.int64)
        return ranks
