"""MMGCN: multi-modal graph convolution network (Wei et al., ACM MM 2019), with the settings of
the MMRec toolbox's implementation (enoche/MMRec, ``src/models/mmgcn.py``) as defaults.

Each modality (image, text, attributes) has its own graph convolution branch over the user-item
training graph. A branch starts from x = normalize([users' preference vectors; items' features]),
the features projected to a latent width (MMRec: 256 for images) or kept at their raw width
(MMRec: text), and at every layer computes

* the neighbours' messages: h = leaky_relu(mean over neighbours of W x_j),
* the node's own representation plus its ID embedding: x_hat = leaky_relu(W' x) + id,

and combines them as x <- leaky_relu(W'' [h; x_hat]) (concatenation, MMRec's default) or
x <- leaky_relu(W'' h + x_hat). The first layer works at the branch's input width, the others
at ``hidden``. A node's representation is the mean of its branches' outputs; a user's score for
an item is the dot product. Trained with BPR on sampled negatives, with L2 regularisation of the
batch's ID embeddings and user preferences.

MMRec's ID embeddings and user preferences never train, and we do not copy that: it creates them
as plain tensors (``xavier_normal_(torch.rand(..., requires_grad=True)).to(device)``), not
``nn.Parameter`` objects, so they are not among the model's parameters and its optimiser never
updates them; they keep their random initial values and its L2 term on them has no effect. Here
both are parameters and train.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import SimpleConv

from seqrerank.data.dataset import SequenceData
from seqrerank.data.images import ItemImages
from seqrerank.features import ItemFeatures, require_features
from seqrerank.graph import adjacency_t, interaction_batches
from seqrerank.methods.base import Recommender


class GraphConv(nn.Module):
    """MMGCN's convolution: a linear message, averaged over the node's neighbours."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim, bias=False)
        self.aggregate = SimpleConv(aggr="mean")

    def forward(self, x: torch.Tensor, adj_t: torch.Tensor) -> torch.Tensor:
        return self.aggregate(self.linear(x), adj_t)


class ModalityBranch(nn.Module):
    """The graph convolutions of one modality, from user preferences and item features.
    ``latent``: the width the features are projected to, or None to keep their own."""

    def __init__(
        self,
        num_users: int,
        feature_dim: int,
        latent: int | None,
        hidden: int,
        layers: int,
        concat: bool,
    ):
        super().__init__()
        self.concat = concat
        width = latent or feature_dim
        self.preference = nn.Parameter(nn.init.xavier_normal_(torch.empty(num_users + 1, width)))
        self.project = nn.Linear(feature_dim, latent) if latent else nn.Identity()
        widths = [width] + [hidden] * (layers - 1)
        self.convs = nn.ModuleList(GraphConv(w, w) for w in widths)
        self.self_linears = nn.ModuleList(nn.Linear(w, hidden) for w in widths)
        self.combines = nn.ModuleList(
            nn.Linear(w + hidden if concat else w, hidden) for w in widths
        )

    def forward(
        self, features: torch.Tensor, id_embedding: torch.Tensor, adjacency: torch.Tensor
    ) -> torch.Tensor:
        x = F.normalize(torch.cat([self.preference, self.project(features)]), dim=-1)
        for conv, self_linear, combine in zip(
            self.convs, self.self_linears, self.combines, strict=True
        ):
            h = F.leaky_relu(conv(x, adjacency))
            x_hat = F.leaky_relu(self_linear(x)) + id_embedding
            if self.concat:
                x = F.leaky_relu(combine(torch.cat([h, x_hat], dim=1)))
            else:
                x = F.leaky_relu(combine(h) + x_hat)
        return x


# MMRec projects image features to 256 dimensions and keeps text at its raw width. It has no
# attribute modality: a sparse multi-hot of hundreds of ids (637 on Beauty) is projected like an
# image; at its raw width a Beauty training batch took 2.7 times as long (3.6 s against 1.3 s).
LATENT = {"image": 256, "attributes": 256}


class MMGCN(Recommender):
    """Defaults are MMRec's: 3 layers, concatenation, the ``latent`` widths of ``LATENT`` (a
    modality not named keeps its raw width). Our former settings: ``layers=2``, ``concat=False``,
    ``latent={"image": 64, "text": 64, "attributes": 64}``."""

    def __init__(
        self,
        num_items: int,
        num_users: int,
        item_features: Mapping[str, torch.Tensor],
        adjacency: torch.Tensor,
        hidden: int = 64,
        layers: int = 3,
        concat: bool = True,
        latent: Mapping[str, int | None] | None = None,
        reg_weight: float = 1e-4,
    ):
        super().__init__()
        self.num_users, self.reg_weight = num_users, reg_weight
        latent = LATENT if latent is None else latent
        self.register_buffer("adjacency", adjacency, persistent=False)
        self.modalities = list(item_features)
        for modality, values in item_features.items():
            self.register_buffer(f"{modality}_features", values, persistent=False)
        self.id_embedding = nn.Parameter(
            nn.init.xavier_normal_(torch.empty(num_users + num_items + 2, hidden))
        )
        self.branches = nn.ModuleDict(
            {
                modality: ModalityBranch(
                    num_users, values.shape[1], latent.get(modality), hidden, layers, concat
                )
                for modality, values in item_features.items()
            }
        )

    @classmethod
    def from_data(
        cls,
        data: SequenceData,
        items: pd.DataFrame | None = None,
        features: Mapping[str, ItemFeatures] | None = None,
        images: ItemImages | None = None,
        **params: Any,
    ) -> MMGCN:
        chosen = require_features(cls.__name__, features)
        values = {modality: f.values for modality, f in chosen.items()}
        return cls(data.num_items, data.num_users, values, adjacency_t(data), **params)

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Users [U + 1, hidden] and items [N + 1, hidden]: the mean of the branches."""
        outputs = [
            self.branches[m](getattr(self, f"{m}_features"), self.id_embedding, self.adjacency)
            for m in self.modalities
        ]
        nodes = torch.stack(outputs).mean(dim=0)
        return nodes[: self.num_users + 1], nodes[self.num_users + 1 :]

    def training_batches(
        self, data: SequenceData, batch_size: int, generator: torch.Generator
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        return interaction_batches(data, batch_size, generator)

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        users, positives, negatives = batch
        user_reps, item_reps = self.representations()
        user = user_reps[users]
        difference = (user * (item_reps[positives] - item_reps[negatives])).sum(-1)
        item_ids = self.id_embedding[self.num_users + 1 :]
        regularised = (
            self.id_embedding[users].pow(2).mean()
            + item_ids[positives].pow(2).mean()
            + item_ids[negatives].pow(2).mean()
            + sum(branch.preference[users].pow(2).mean() for branch in self.branches.values())
        )
        return -F.logsigmoid(difference).mean() + self.reg_weight * regularised

    def score(self, users: torch.Tensor, histories: torch.Tensor) -> torch.Tensor:
        user_reps, item_reps = self.representations()
        return user_reps[users] @ item_reps.T
