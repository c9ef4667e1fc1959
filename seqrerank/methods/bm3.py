"""BM3: bootstrapped multi-modal model (Zhou et al., WWW 2023), after the authors' MMRec code.

User and item ID embeddings are propagated LightGCN-style over the symmetric-normalised training
graph (layer outputs averaged; the item's own ID embedding is added back). With no negative
sampling, each (user, item) interaction trains by bootstrapping: the "online" view of a node is
a shared predictor applied to its embedding, the "target" view the embedding with dropout and no
gradient, and the loss pulls

* the online user towards the target item and the online item towards the target user,
* each modality's projected feature (online) towards the target item (alignment with the
  interactions) and towards its own dropped-out view (modality contrast), for the items that
  have that modality,

by cosine similarity, plus an L2 penalty on the propagated embeddings. Items are scored by the
dot product of the online user and item views.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import LGConv
from torch_geometric.nn.conv.gcn_conv import gcn_norm

from seqrerank.data.dataset import SequenceData
from seqrerank.data.images import ItemImages
from seqrerank.features import ItemFeatures, require_features
from seqrerank.graph import adjacency_t, interaction_batches
from seqrerank.methods.base import Recommender


def cosine_loss(online: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if not len(online):
        return online.new_zeros(())
    return 1 - F.cosine_similarity(online, target.detach(), dim=-1).mean()


class BM3(Recommender):
    def __init__(
        self,
        num_items: int,
        num_users: int,
        item_features: Mapping[str, ItemFeatures],
        adjacency: torch.Tensor,
        hidden: int = 64,
        layers: int = 1,
        dropout: float = 0.5,
        reg_weight: float = 0.1,
        cl_weight: float = 2.0,
    ):
        super().__init__()
        self.num_users = num_users
        self.dropout, self.reg_weight, self.cl_weight = dropout, reg_weight, cl_weight
        self.layers = layers
        # Normalised already (gcn_norm in from_data): not again at every propagation.
        self.conv = LGConv(normalize=False)
        self.register_buffer("adjacency", adjacency, persistent=False)
        self.user_embedding = nn.Embedding(num_users + 1, hidden)
        self.item_embedding = nn.Embedding(num_items + 1, hidden)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_embedding.weight)
        self.predictor = nn.Linear(hidden, hidden)
        nn.init.xavier_normal_(self.predictor.weight)
        # The modality features start from the given values and are fine-tuned, as in BM3.
        self.features = nn.ModuleDict()
        self.projections = nn.ModuleDict()
        for modality, feature in item_features.items():
            self.features[modality] = nn.Embedding.from_pretrained(feature.values, freeze=False)
            self.projections[modality] = nn.Linear(feature.dim, hidden)
            nn.init.xavier_normal_(self.projections[modality].weight)
            self.register_buffer(f"{modality}_present", feature.present, persistent=False)

    @classmethod
    def from_data(
        cls,
        data: SequenceData,
        items: pd.DataFrame | None = None,
        features: Mapping[str, ItemFeatures] | None = None,
        images: ItemImages | None = None,
        **params: Any,
    ) -> BM3:
        chosen = require_features(cls.__name__, features)
        num_nodes = data.num_users + data.num_items + 2
        adjacency, _ = gcn_norm(adjacency_t(data), num_nodes=num_nodes, add_self_loops=False)
        return cls(data.num_items, data.num_users, chosen, adjacency, **params)

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """LightGCN: users [U + 1, hidden] and items [N + 1, hidden], before the predictor."""
        x = torch.cat([self.user_embedding.weight, self.item_embedding.weight])
        outputs = [x]
        for _ in range(self.layers):
            x = self.conv(x, self.adjacency)
            outputs.append(x)
        nodes = torch.stack(outputs).mean(dim=0)
        users, items = nodes[: self.num_users + 1], nodes[self.num_users + 1 :]
        return users, items + self.item_embedding.weight

    def training_batches(
        self, data: SequenceData, batch_size: int, generator: torch.Generator
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return interaction_batches(data, batch_size, generator, negatives=False)

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        users, items = batch
        user_nodes, item_nodes = self.propagate()
        with torch.no_grad():
            user_target = F.dropout(user_nodes[users], self.dropout)
            item_target = F.dropout(item_nodes[items], self.dropout)
        user_online = self.predictor(user_nodes[users])
        item_online = self.predictor(item_nodes[items])
        loss = cosine_loss(user_online, item_target) + cosine_loss(item_online, user_target)

        modality_loss = user_online.new_zeros(())
        for modality, table in self.features.items():
            has = getattr(self, f"{modality}_present")[items]
            projected = self.projections[modality](table(items[has]))
            with torch.no_grad():
                projected_target = F.dropout(projected, self.dropout)
            online = self.predictor(projected)
            modality_loss = modality_loss + cosine_loss(online, item_target[has])
            modality_loss = modality_loss + cosine_loss(online, projected_target)

        # L2 of all propagated embeddings, scaled by the number of items (as in MMRec's BM3).
        regularised = (user_nodes.norm() + item_nodes.norm()) / len(item_nodes)
        return loss + self.reg_weight * regularised + self.cl_weight * modality_loss

    def score(self, users: torch.Tensor, histories: torch.Tensor) -> torch.Tensor:
        user_nodes, item_nodes = self.propagate()
        return self.predictor(user_nodes[users]) @ self.predictor(item_nodes).T
