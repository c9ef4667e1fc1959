"""LTR: a learning-to-rank reranker, LightGBM's LambdaRank over list features.

The classical second stage that an LLM reranker has to beat: gradient-boosted trees over the
features of :mod:`seqrerank.ranking_features` (its sources' scores and ranks, popularity,
transitions and co-occurrence with the last items, similarity in every modality), trained with
the LambdaRank objective on the ``train``-task lists of its candidate source (one query per user
whose target is in the list: a list without it has no gradient) and early-stopped on the
``val``-task lists by the training settings' metric over all val users.

It does not train in the shared loop (there are no torch parameters to step): it is registered
``trains_on="candidates"`` with ``trains_itself = True``, and the pipeline hands it the lists
(:meth:`fit_lists`). Of the training settings it uses the seed and the metric; the booster's
own settings are model parameters (``methods.ltr.model``). Scoring needs the list's task, so it
scores whole lists (:meth:`score_lists`).

The booster is kept in the model's state dict as its text (UTF-8 bytes in a uint8 tensor, the
module's extra state), so ``model.pt`` holds tensors and plain values only and loads with
``weights_only``; the feature names go with it and are checked at load time.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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


class LTR(Recommender):
    trainable = False  # not by the shared loop
    trains_itself = True

    def __init__(
        self,
        num_items: int,
        sources: Sequence[str] = (),
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
        self.num_items = num_items
        self.sources = list(sources)
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
            "metric": "None",  # our metric, over all val users (fit_lists)
            "deterministic": True,
            "force_col_wise": True,
            "verbosity": -1,
        }
        self.max_rounds = max_rounds
        self.early_stopping_rounds = early_stopping_rounds
        self.history_window = history_window
        self.cooccurrence_window = cooccurrence_window
        self.booster: lgb.Booster | None = None
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
                "LTR learns from train-task lists and stops on val-task lists, "
                f"not {train.split!r} and {val.split!r} lists"
            )
        builder = self._builder()
        started = time.perf_counter()
        train_queries = Queries.of(builder, train)
        val_queries = Queries.of(builder, val)
        if len(train_queries.rows) == 0:
            raise ValueError("no train-task list holds its target: nothing to learn from")
        train_set = train_queries.dataset(builder.names)
        val_set = val_queries.dataset(builder.names, reference=train_set)
        metric = settings.metric
        cutoff = int(metric.split("@")[1])

        def evaluate(predictions: np.ndarray, dataset: lgb.Dataset) -> tuple[str, float, bool]:
            queries = val_queries if dataset is val_set else train_queries
            ranks = queries.target_ranks(predictions)
            return metric, metrics_from_ranks(ranks, (cutoff,))[metric], True

        record: dict = {}
        params = {
            **self.booster_params,
            "seed": settings.seed,
            "num_threads": torch.get_num_threads(),
        }
        stop = lgb.early_stopping(self.early_stopping_rounds, first_metric_only=True, verbose=False)
        booster = lgb.train(
            params,
            train_set,
            num_boost_round=self.max_rounds,
            valid_sets=[train_set, val_set],
            valid_names=["train", "val"],
            feval=evaluate,
            callbacks=[stop, lgb.record_evaluation(record)],
        )
        seconds = time.perf_counter() - started
        best_round = booster.best_iteration or booster.current_iteration()
        self.booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best_round))
        self.feature_names = builder.names
        history, best = [], float("-inf")
        for round_, (fit, value) in enumerate(
            zip(record["train"][metric], record["val"][metric], strict=True), start=1
        ):
            improved = round_ <= best_round and value > best
            best = value if improved else best
            history.append(
                {
                    "epoch": round_,
                    # LambdaRank reports no loss: 1 - the metric on the training lists.
                    "loss": 1.0 - fit,
                    "val": {metric: value},
                    "best": improved,
                }
            )
        history[-1]["train_seconds"] = round(seconds, 3)
        log.info(
            "LambdaRank: %d rounds, best %d, val %s %.4f (%.1fs, %d training queries)",
            len(history),
            best_round,
            metric,
            history[best_round - 1]["val"][metric],
            seconds,
            len(train_queries.rows),
        )
        return history

    # --- scoring --------------------------------------------------------------------------

    def score_lists(self, data: SequenceData, candidates: RankedLists) -> np.ndarray:
        if self.booster is None:
            raise ValueError("the LTR reranker is not trained: fit_lists first, or load a model")
        builder = self._builder()
        if builder.names != self.feature_names:
            raise ValueError(
                "the features available now differ from those the model was trained with "
                f"({', '.join(self.feature_names)}): give it the same sources and item features"
            )
        features = builder.matrix(candidates)
        scores = self.booster.predict(features, num_threads=torch.get_num_threads())
        return scores.reshape(candidates.items.shape)

    def feature_importance(self) -> pd.DataFrame:
        """Per feature: total gain of its splits, and their number, largest gain first."""
        if self.booster is None:
            raise ValueError("the LTR reranker is not trained")
        frame = pd.DataFrame(
            {
                "feature": self.booster.feature_name(),
                "gain": self.booster.feature_importance("gain"),
                "splits": self.booster.feature_importance("split"),
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
        if self.booster is None:
            return torch.zeros(0, dtype=torch.uint8)
        state = {"booster": self.booster.model_to_string(), "features": self.feature_names}
        encoded = json.dumps(state).encode("utf-8")
        return torch.frombuffer(bytearray(encoded), dtype=torch.uint8).clone()

    def set_extra_state(self, state: torch.Tensor) -> None:
        if state.numel() == 0:
            self.booster, self.feature_names = None, []
            return
        saved = json.loads(bytes(state.numpy().tobytes()).decode("utf-8"))
        self.booster = lgb.Booster(model_str=saved["booster"])
        self.feature_names = list(saved["features"])


@dataclass(frozen=True)
class Queries:
    """The users of candidate lists whose target is listed, as LightGBM queries: their listed
    items' features back to back, labels (1 for the target), query sizes, and each target's
    position within its query. A user without the target in the list adds no gradient and a
    metric of 0 (``users`` counts every user of the lists)."""

    features: np.ndarray
    labels: np.ndarray
    sizes: np.ndarray
    positions: np.ndarray
    rows: np.ndarray
    users: int

    @classmethod
    def of(cls, builder: ListFeatures, lists: RankedLists) -> Queries:
        listed = lists.items > 0
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
        """Every user's target rank (0: not listed) when each query is sorted by
        ``predictions``, ties in list order as the reranking sorts them."""
        ranks = np.zeros(self.users, dtype=np.int64)
        if len(self.rows) == 0:
            return ranks
        starts = np.cumsum(self.sizes) - self.sizes
        query = np.repeat(np.arange(len(self.sizes)), self.sizes)
        offset = np.arange(len(predictions)) - starts[query]
        target = predictions[starts + self.positions][query]
        ties_before = (predictions == target) & (offset < self.positions[query])
        ahead = (predictions > target) | ties_before
        counts = np.bincount(query, weights=ahead, minlength=len(self.sizes))
        ranks[self.rows] = 1 + counts.astype(np.int64)
        return ranks
