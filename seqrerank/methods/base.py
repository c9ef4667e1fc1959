"""The interface every method implements, retriever or reranker."""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import nn

from seqrerank.data.dataset import SequenceData
from seqrerank.data.images import ItemImages
from seqrerank.features import ItemFeatures

if TYPE_CHECKING:
    import numpy as np

    from seqrerank.candidates import RankedLists
    from seqrerank.training import TrainSettings


class Recommender(nn.Module):
    """A model that scores items for users.

    Retrievers implement :meth:`score` (every item, for full ranking); rerankers implement
    :meth:`score_candidates` (given candidate lists), which by default reads :meth:`score`.
    Trainable methods implement :meth:`training_batches` and :meth:`loss`; the shared loop in
    :mod:`seqrerank.training` does the rest (optimiser, validation, early stopping, checkpoints).

    Methods that work on whole candidate lists rather than batches of users (a fusion of other
    models' lists, a gradient-boosted ranker over list features) implement the list hooks
    instead: :meth:`ranked_lists` (retrieval), :meth:`score_lists` (reranking) and, for one that
    trains itself, :meth:`fit_lists` with ``trains_itself = True``.
    """

    trainable = True
    trains_itself = False
    """Whether the method trains itself on candidate lists (:meth:`fit_lists`) instead of in the
    shared loop: a reranker that ``trains_on="candidates"`` but has no torch parameters to step
    (LightGBM's LambdaRank)."""
    mixed_precision = True
    """Whether training may run under bf16 autocast on a GPU (see :mod:`seqrerank.training`)."""
    score_batch_size = 512
    """Users per call of :meth:`score` or :meth:`score_candidates` in evaluation; in a job of
    several processes, the unit of work that its ranks share out."""

    @classmethod
    def from_data(
        cls,
        data: SequenceData,
        items: pd.DataFrame | None = None,
        features: Mapping[str, ItemFeatures] | None = None,
        images: ItemImages | None = None,
        **params: Any,
    ) -> Recommender:
        """Build the model for a dataset; ``params`` are ``methods.<name>.model`` in config.
        ``items`` is the item table (titles, texts, generated texts), ``features`` the item
        features (by modality) that the method's registry entry asks for, ``images`` the items'
        images: a method reads those it needs, never a file. A method whose registry entry
        ``reads_lists`` also gets ``retrieved``: the exported lists of the models named in its
        ``sources`` parameter, by name and split (``{"lrurec": {"train": RankedLists, ...}}``)."""
        return cls(num_items=data.num_items, **params)

    def training_batches(
        self, data: SequenceData, batch_size: int, generator: torch.Generator
    ) -> Iterator[Any]:
        raise NotImplementedError

    def loss(self, batch: Any) -> torch.Tensor:
        raise NotImplementedError

    def score(self, users: torch.Tensor, histories: torch.Tensor) -> torch.Tensor:
        """Scores [batch, num_items + 1] for every item (column 0 is padding).

        ``users`` holds user ids [batch]; ``histories`` the user's items [batch, length], left-
        padded with 0 and most recent last; a model reads whichever it needs. The scores are a
        new tensor, not a view of the model's own: full ranking masks them in place."""
        raise NotImplementedError

    def score_candidates(
        self, users: torch.Tensor, histories: torch.Tensor, candidates: torch.Tensor
    ) -> torch.Tensor:
        """Scores [batch, num_candidates] for the items in ``candidates`` (0 = padding)."""
        return self.score(users, histories).gather(1, candidates)

    def ranked_lists(self, data: SequenceData, split: str, top_k: int) -> RankedLists | None:
        """The top-``top_k`` lists of every user for ``split``, when the method builds whole
        lists itself (a fusion of other models' exported lists); None (the default): the
        evaluation ranks :meth:`score`. Lists returned here must obey what
        :func:`seqrerank.evaluation.retrieve` guarantees: no item of the user's history (unless
        the dataset keeps repeats), and in ``train`` lists none of the user's val/test items."""
        return None

    def score_lists(self, data: SequenceData, candidates: RankedLists) -> np.ndarray | None:
        """Scores [users, num_candidates] of the items of ``candidates`` (any float; padding
        items are ignored), when the method scores whole lists at once and needs to know their
        split (a ranker whose features are other models' lists of that split); None (the
        default): the evaluation batches :meth:`score_candidates`."""
        return None

    def fit_lists(
        self,
        data: SequenceData,
        train: RankedLists,
        val: RankedLists,
        settings: TrainSettings,
    ) -> list[dict]:
        """Train on the ``train``-task candidate lists, early-stopped on the ``val`` lists; the
        history in the training loop's format (``epoch``, ``loss``, ``val``, ``best``). Only for
        ``trains_itself`` methods."""
        raise NotImplementedError


def check_params(cls: type, params: dict[str, Any], where: str) -> None:
    """Fail with the valid names when config passes a parameter the model does not take."""
    # Parameters without a default (num_items, ...) are supplied by from_data, not by config.
    signature = inspect.signature(cls.__init__).parameters.values()
    accepted = [
        p.name
        for p in signature
        if p.default is not p.empty and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(
            f"{where}: unknown parameter(s) {', '.join(unknown)} for {cls.__name__}; "
            f"valid parameters: {', '.join(accepted) or 'none'}"
        )
