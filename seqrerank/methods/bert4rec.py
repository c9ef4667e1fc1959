"""BERT4Rec: a bidirectional transformer trained to recover masked items (Sun et al., CIKM 2019).

Training masks a random share of each training sequence and predicts the masked items with a
softmax over all items (the full cross-entropy that Petrov & Macdonald found trains far faster than
sampled losses). As in the original code, a share of the training sequences (``mask_last_share``;
one in eleven there) masks only its last item, the position that inference predicts. At inference
a mask token is appended to the history; its output goes through BERT's output transform (dense,
GELU, LayerNorm) and scores the items against the tied item embeddings.

Where ours differs from the original code: each item is masked independently with probability
``mask_prob`` (the original masks exactly that share, rounded) and is always replaced by the mask
token (the original's Beauty run does the same, ``mask_prob=1.0``), and every epoch draws new
masks instead of ten fixed copies of the data.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from seqrerank.batching import length_bucketed_batches, pad_left, training_windows
from seqrerank.data.dataset import SequenceData
from seqrerank.methods.base import Recommender


class BERT4Rec(Recommender):
    def __init__(
        self,
        num_items: int,
        hidden: int = 64,
        layers: int = 2,
        heads: int = 2,
        dropout: float = 0.2,
        max_len: int = 50,
        mask_prob: float = 0.2,
        mask_last_share: float = 1 / 11,
        attention_dropout: float | None = None,
    ):
        super().__init__()
        self.max_len = max_len
        self.mask_prob = mask_prob
        self.mask_last_share = mask_last_share
        self.mask_token = num_items + 1
        self.item_embedding = nn.Embedding(num_items + 2, hidden, padding_idx=0)
        self.position_embedding = nn.Embedding(max_len, hidden)
        self.embedding_norm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            hidden, heads, 4 * hidden, dropout, activation="gelu", batch_first=True
        )
        # BERT drops attention weights at its own rate (the original's Beauty run: 0.2 against
        # 0.5 elsewhere); torch's layer has one rate for both unless told otherwise.
        if attention_dropout is not None:
            layer.self_attn.dropout = attention_dropout
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.output_transform = nn.Sequential(
            nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden)
        )
        self.item_bias = nn.Parameter(torch.zeros(num_items + 1))
        # BERT's initialisation (initializer_range 0.02), also of the output transform.
        for weight in (self.item_embedding, self.position_embedding, self.output_transform[0]):
            nn.init.trunc_normal_(weight.weight, std=0.02)

    def encode(self, items: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """Hidden states of left-padded ``items`` [batch, length], or with ``last_only`` the last
        position's alone [batch, hidden]: the last layer then attends from that position only,
        which is all that scoring reads."""
        # Positions count back from the most recent item, so a batch padded only to its longest
        # sequence sees the same positions as one padded to max_len.
        length = items.shape[1]
        positions = torch.arange(self.max_len - length, self.max_len, device=items.device)
        x = self.item_embedding(items) + self.position_embedding(positions)
        x = self.dropout(self.embedding_norm(x))
        padding = items == 0
        if not last_only:
            return self.encoder(x, src_key_padding_mask=padding)
        *first, last = self.encoder.layers
        for layer in first:
            x = layer(x, src_key_padding_mask=padding)
        return last_position(last, x, padding)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        # Output layer tied to the item embeddings, without the mask token's row.
        items = self.item_embedding.weight[: self.mask_token]
        return F.linear(self.output_transform(hidden), items, self.item_bias)

    def training_batches(
        self, data: SequenceData, batch_size: int, generator: torch.Generator
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        windows = training_windows(data.train, self.max_len - 1)
        expected_masked = [max(1.0, self.mask_prob * len(w)) for w in windows]  # at least one
        share = self.mask_last_share
        self.labels_per_window = (1 - share) * sum(expected_masked) / len(windows) + share
        for idx in length_bucketed_batches([len(w) for w in windows], batch_size, generator):
            items = pad_left([windows[i] for i in idx.tolist()])
            real = items > 0
            masked = real & (torch.rand(items.shape, generator=generator) < self.mask_prob)
            last_only = torch.rand(len(items), generator=generator) < share
            masked[last_only] = False
            # Every sequence gets at least its last item masked, the position inference predicts.
            masked[:, -1] |= ~masked.any(dim=1)
            labels = torch.where(masked, items, 0)
            yield torch.where(masked, self.mask_token, items), labels

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        inputs, labels = batch
        hidden = self.encode(inputs)
        masked = labels > 0
        # Divided by the epoch's mean number of masked items, not the batch's own count: batches
        # of similar lengths differ widely in it, and every masked item should weigh alike.
        total = F.cross_entropy(self.logits(hidden[masked]), labels[masked], reduction="sum")
        return total / (len(inputs) * self.labels_per_window)

    def score(self, users: torch.Tensor, histories: torch.Tensor) -> torch.Tensor:
        recent = histories[:, -(self.max_len - 1) :]
        mask = torch.full(
            (len(recent), 1), self.mask_token, dtype=recent.dtype, device=recent.device
        )
        return self.logits(self.encode(torch.cat([recent, mask], dim=1), last_only=True))


def last_position(
    layer: nn.TransformerEncoderLayer, x: torch.Tensor, padding: torch.Tensor
) -> torch.Tensor:
    """``layer(x, src_key_padding_mask=padding)[:, -1]`` of a post-norm layer, with the last
    position as its only query: the keys and values still come from every position."""
    query = x[:, -1:]
    attended = layer.self_attn(query, x, x, key_padding_mask=padding, need_weights=False)[0]
    h = layer.norm1(query + layer.dropout1(attended))
    feed_forward = layer.linear2(layer.dropout(layer.activation(layer.linear1(h))))
    return layer.norm2(h + layer.dropout2(feed_forward))[:, 0]
