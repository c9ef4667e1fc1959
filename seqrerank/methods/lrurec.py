"""LRURec: sequential recommendation with linear recurrent units (Yue et al., WSDM 2024).

Each block is a linear recurrent unit, a diagonal complex recurrence
``h_t = lambda * h_{t-1} + gamma * B x_t`` read out as ``y_t = Re(C h_t)``, followed by a
position-wise feed-forward layer. The recurrence is linear, so it is computed for all positions at
once with a parallel scan of log2(L) steps instead of a loop over time. Items are scored by the
dot product of the last hidden state with the (tied) item embeddings, trained with cross-entropy
over all items at every position.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from seqrerank.batching import length_bucketed_batches, pad_left, training_windows
from seqrerank.data.dataset import SequenceData
from seqrerank.methods.base import Recommender


class LRULayer(nn.Module):
    def __init__(self, dim: int, dropout: float, r_min: float = 0.8, r_max: float = 0.99):
        super().__init__()
        # Eigenvalues lambda = exp(-nu + i*theta) initialised on a ring r_min <= |lambda| <= r_max,
        # stored in log space so that |lambda| < 1 (a stable recurrence) throughout training.
        u1, u2 = torch.rand(dim), torch.rand(dim)
        nu = -0.5 * torch.log(u1 * (r_max**2 - r_min**2) + r_min**2)
        theta = 2 * math.pi * u2
        gamma = torch.sqrt(1 - torch.exp(-2 * nu))  # normalises the state's variance
        self.nu_log = nn.Parameter(torch.log(nu))
        self.theta_log = nn.Parameter(torch.log(theta))
        self.gamma_log = nn.Parameter(torch.log(gamma))
        self.in_proj = nn.Linear(dim, 2 * dim)  # B, real and imaginary parts
        self.out_proj = nn.Linear(2 * dim, dim)  # C, reading [Re h, Im h]
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """The layer's output at every position, or with ``last_only`` at the last one alone
        [batch, dim]: the state ``h_T = sum_t lambda^(T-t) u_t`` as one weighted sum, which is
        what scoring needs from the last layer (a third of the time of the scan)."""
        log_lambda = torch.complex(-torch.exp(self.nu_log), torch.exp(self.theta_log))
        # The recurrence runs in complex64 also under bf16 autocast (there is no bf16 complex).
        real, imag = self.in_proj(x).float().chunk(2, dim=-1)
        # Zeroing the left padding's inputs keeps it out of the state: no reset is needed.
        u = torch.complex(real, imag) * torch.exp(self.gamma_log) * mask.unsqueeze(-1)
        if last_only:
            steps_back = torch.arange(u.shape[1] - 1, -1, -1, device=u.device)
            h = (u * torch.exp(steps_back[:, None] * log_lambda)).sum(dim=1)
            x = x[:, -1]
        else:
            h = parallel_scan(u, torch.exp(log_lambda))
        y = self.out_proj(torch.cat([h.real, h.imag], dim=-1))
        return self.norm(x + self.dropout(y))


def parallel_scan(u: torch.Tensor, lamb: torch.Tensor) -> torch.Tensor:
    """All states of ``h_t = lamb * h_{t-1} + u_t`` for u [batch, length, dim], in log2(length)
    steps: after the step with offset d, h_t sums the inputs of the last 2d positions."""
    power, offset = lamb, 1
    while offset < u.shape[1]:
        u = torch.cat([u[:, :offset], u[:, offset:] + power * u[:, :-offset]], dim=1)
        power, offset = power * power, offset * 2
    return u


class FeedForward(nn.Module):
    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim)
        )
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.dropout(self.net(x)))


class LRURec(Recommender):
    def __init__(
        self,
        num_items: int,
        hidden: int = 64,
        blocks: int = 2,
        dropout: float = 0.2,
        lru_dropout: float = 0.2,
        max_len: int = 50,
    ):
        super().__init__()
        self.max_len = max_len
        self.item_embedding = nn.Embedding(num_items + 1, hidden, padding_idx=0)
        self.embedding_norm = nn.LayerNorm(hidden)
        self.embedding_dropout = nn.Dropout(dropout)
        self.lru_layers = nn.ModuleList(LRULayer(hidden, lru_dropout) for _ in range(blocks))
        self.feed_forwards = nn.ModuleList(FeedForward(hidden, dropout) for _ in range(blocks))
        self.item_bias = nn.Parameter(torch.zeros(num_items + 1))
        # Small item vectors: with unit-variance ones the initial logits are so large that the
        # first epochs only shrink them.
        nn.init.trunc_normal_(self.item_embedding.weight, std=0.02)

    def encode(self, items: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """Hidden state after every position of left-padded ``items`` [batch, length], or with
        ``last_only`` after the last position alone [batch, hidden] (the last block then
        computes nothing else)."""
        mask = (items > 0).float()
        x = self.embedding_dropout(self.embedding_norm(self.item_embedding(items)))
        blocks = list(zip(self.lru_layers, self.feed_forwards, strict=True))
        for block, (lru, feed_forward) in enumerate(blocks, 1):
            x = feed_forward(lru(x, mask, last_only=last_only and block == len(blocks)))
        return x

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        # F.linear adds the bias inside the matrix product, not in a second pass over the scores.
        return F.linear(hidden, self.item_embedding.weight, self.item_bias)

    def training_batches(
        self, data: SequenceData, batch_size: int, generator: torch.Generator
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        windows = training_windows(data.train, self.max_len)
        self.labels_per_window = sum(len(w) - 1 for w in windows) / len(windows)
        for idx in length_bucketed_batches([len(w) for w in windows], batch_size, generator):
            batch = pad_left([windows[i] for i in idx.tolist()])
            inputs, labels = batch[:, :-1], batch[:, 1:]
            yield inputs, labels * (inputs > 0)  # no label where the input is padding

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        inputs, labels = batch
        hidden = self.encode(inputs)
        # Project only the positions that have a label: most of a padded batch is padding.
        labelled = labels > 0
        # Length-bucketed batches hold very different numbers of labels: dividing by the
        # epoch's mean, not the batch's own count, weighs every transition alike, as random
        # batches would.
        total = F.cross_entropy(self.logits(hidden[labelled]), labels[labelled], reduction="sum")
        return total / (len(inputs) * self.labels_per_window)

    def score(self, users: torch.Tensor, histories: torch.Tensor) -> torch.Tensor:
        return self.logits(self.encode(histories[:, -self.max_len :], last_only=True))
