"""VBPR: visual Bayesian personalised ranking (He & McAuley, AAAI 2016).

The preference of user u for item i is

    x_ui = beta_i + gamma_u . gamma_i + theta_u . (E f_i) + beta' . f_i

with latent factors gamma, a visual preference theta_u, a learned projection E of the item's
content feature f_i (all its modalities concatenated: CLIP image and text embeddings, or attribute
multi-hots) and the visual bias beta'. The global and user biases of the paper are left out: they
do not change a user's ranking. Trained with the BPR loss on (user, item, sampled negative)
triples and L2 regularisation of the factors and biases in play.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from seqrerank.data.dataset import SequenceData
from seqrerank.data.images import ItemImages
from seqrerank.features import ItemFeatures, require_features
from seqrerank.graph import interaction_batches
from seqrerank.methods.base import Recommender


class VBPR(Recommender):
    def __init__(
        self,
        num_items: int,
        num_users: int,
        item_features: torch.Tensor,
        hidden: int = 64,
        reg_weight: float = 1e-4,
    ):
        super().__init__()
        self.reg_weight = reg_weight
        # Not saved with the model: it is rebuilt from the feature files.
        self.register_buffer("item_features", item_features, persistent=False)
        self.user_factors = nn.Embedding(num_users + 1, hidden)  # gamma_u
        self.user_visual = nn.Embedding(num_users + 1, hidden)  # theta_u
        self.item_factors = nn.Embedding(num_items + 1, hidden)  # gamma_i
        self.item_bias = nn.Parameter(torch.zeros(num_items + 1))  # beta_i
        self.projection = nn.Linear(item_features.shape[1], hidden, bias=False)  # E
        self.visual_bias = nn.Linear(item_features.shape[1], 1, bias=False)  # beta'
        for embedding in (self.user_factors, self.user_visual, self.item_factors):
            nn.init.xavier_uniform_(embedding.weight)

    @classmethod
    def from_data(
        cls,
        data: SequenceData,
        items: pd.DataFrame | None = None,
        features: Mapping[str, ItemFeatures] | None = None,
        images: ItemImages | None = None,
        **params: Any,
    ) -> VBPR:
        chosen = require_features(cls.__name__, features)
        concatenated = torch.cat([f.values for f in chosen.values()], dim=1)
        return cls(data.num_items, data.num_users, concatenated, **params)

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.user_factors(users), self.user_visual(users)], dim=-1)

    def item_vectors(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[gamma_i, E f_i] and the item's bias beta_i + beta' . f_i."""
        content = self.item_features[items]
        vectors = torch.cat([self.item_factors(items), self.projection(content)], dim=-1)
        return vectors, self.item_bias[items] + self.visual_bias(content).squeeze(-1)

    def training_batches(
        self, data: SequenceData, batch_size: int, generator: torch.Generator
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        return interaction_batches(data, batch_size, generator)

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        users, positives, negatives = batch
        user = self.user_vectors(users)
        pos, pos_bias = self.item_vectors(positives)
        neg, neg_bias = self.item_vectors(negatives)
        difference = (user * (pos - neg)).sum(-1) + pos_bias - neg_bias
        regularised = (
            user.pow(2).sum()
            + self.item_factors(positives).pow(2).sum()
            + self.item_factors(negatives).pow(2).sum()
            + self.item_bias[positives].pow(2).sum()
            + self.item_bias[negatives].pow(2).sum()
        )
        return -F.logsigmoid(difference).mean() + self.reg_weight * regularised / len(users)

    def score(self, users: torch.Tensor, histories: torch.Tensor) -> torch.Tensor:
        items, bias = self.item_vectors(torch.arange(len(self.item_bias), device=users.device))
        return self.user_vectors(users) @ items.T + bias
