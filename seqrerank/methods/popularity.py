"""Popularity: every user gets the items bought most often in training. The sanity baseline that
every other model is read against."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from seqrerank.data.dataset import SequenceData
from seqrerank.methods.base import Recommender


class Popularity(Recommender):
    trainable = False

    def __init__(self, num_items: int):
        super().__init__()
        self.register_buffer("counts", torch.zeros(num_items + 1))

    @classmethod
    def from_data(cls, data: SequenceData, **_: Any) -> Popularity:
        """Counts of the training interactions: it reads nothing else (and config gives it no
        parameter, checked against ``__init__``)."""
        model = cls(data.num_items)
        counts = np.bincount(np.concatenate(data.train), minlength=data.num_items + 1)
        model.counts.copy_(torch.as_tensor(counts))
        return model

    def score(self, users: torch.Tensor, histories: torch.Tensor) -> torch.Tensor:
        return self.counts.repeat(len(users), 1)
