"""The interface every method implements, retriever or reranker."""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from typing import Any

import pandas as pd
import torch
from torch import nn

from seqrerank.data.dataset import SequenceData
from seqrerank.data.images import ItemImages
from seqrerank.features import ItemFeatures


class Recommender(nn.Module):
    """A model that scores items for users.

    Retrievers implement :meth:`score` (every item, for full ranking); rerankers implement
    :meth:`score_candidates` (given candidate lists), which by default reads :meth:`score`.
    Trainable methods implement :meth:`training_batches` and :meth:`loss`; the shared loop in
    :mod:`seqrerank.training` does the rest (optimiser, validation, early stopping, checkpoints).
    """

    trainable = True
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
        images: a method reads those it needs, never a file."""
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
        padded with 0 and most recent last; a model reads whichever it needs."""
        raise NotImplementedError

    def score_candidates(
        self, users: torch.Tensor, histories: torch.Tensor, candidates: torch.Tensor
    ) -> torch.Tensor:
        """Scores [batch, num_candidates] for the items in ``candidates`` (0 = padding)."""
        return self.score(users, histories).gather(1, candidates)


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
