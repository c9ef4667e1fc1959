"""The user-item interaction graph and training examples of the collaborative retrievers
(VBPR, MMGCN, BM3), which read a user's training items as a set, not a sequence.

Nodes are numbered users first, then items: user ``u`` (1..U) is node ``u``, item ``i`` (1..N) is
node ``U + 1 + i``; nodes 0 and ``U + 1`` are the padding user and item, without edges. Only
training interactions are edges: validation and test items never enter the graph.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch

from seqrerank.batching import index_batches
from seqrerank.data.dataset import SequenceData

MAX_RESAMPLES = 20


def training_pairs(data: SequenceData) -> tuple[np.ndarray, np.ndarray]:
    """Unique (user, item) training interactions, sorted by user then item."""
    users = np.repeat(data.users, [len(seq) for seq in data.train])
    items = np.concatenate(data.train) if data.train else np.zeros(0, dtype=np.int64)
    keys = np.unique(users * (data.num_items + 1) + items)
    return keys // (data.num_items + 1), keys % (data.num_items + 1)


def bipartite_adjacency(
    data: SequenceData, normalization: Literal["symmetric", "mean"] = "symmetric"
) -> torch.Tensor:
    """Sparse [U + N + 2, U + N + 2] adjacency of the training graph, normalised as in
    LightGCN (``D^-1/2 A D^-1/2``) or as a mean over neighbours (``D^-1 A``, MMGCN)."""
    users, items = training_pairs(data)
    num_nodes = data.num_users + data.num_items + 2
    rows = np.concatenate([users, items + data.num_users + 1])
    cols = np.concatenate([items + data.num_users + 1, users])
    degree = np.bincount(rows, minlength=num_nodes).astype(np.float32)
    inverse = np.divide(1.0, degree, out=np.zeros_like(degree), where=degree > 0)
    if normalization == "symmetric":
        weights = np.sqrt(inverse[rows] * inverse[cols])
    else:
        weights = inverse[rows]
    indices = torch.as_tensor(np.stack([rows, cols]))
    # COO: its sparse-dense products train about twice as fast on CPU as CSR's.
    adjacency = torch.sparse_coo_tensor(
        indices, torch.as_tensor(weights), (num_nodes, num_nodes), check_invariants=True
    )
    return adjacency.coalesce()


def interaction_batches(
    data: SequenceData, batch_size: int, generator: torch.Generator, negatives: bool = True
) -> Iterator[tuple[torch.Tensor, ...]]:
    """One epoch of training interactions in shuffled batches: (users, items), and with
    ``negatives`` a third tensor of sampled items the user has not trained on (BPR triples)."""
    users, items = training_pairs(data)
    users_t, items_t = torch.as_tensor(users), torch.as_tensor(items)
    seen = users * (data.num_items + 1) + items  # sorted: training_pairs sorts its keys
    for idx in index_batches(len(users), batch_size, generator):
        if not negatives:
            yield users_t[idx], items_t[idx]
            continue
        batch_users = users[idx.numpy()]
        yield users_t[idx], items_t[idx], sample_negatives(batch_users, seen, data, generator)


def sample_negatives(
    users: np.ndarray, seen: np.ndarray, data: SequenceData, generator: torch.Generator
) -> torch.Tensor:
    """A uniformly drawn item per user that is not among the user's training items (redrawn
    while it is; ``seen`` holds the sorted keys ``user * (N + 1) + item`` of training pairs)."""
    negatives = torch.randint(1, data.num_items + 1, (len(users),), generator=generator)
    for _ in range(MAX_RESAMPLES):
        keys = users * (data.num_items + 1) + negatives.numpy()
        positions = np.minimum(np.searchsorted(seen, keys), len(seen) - 1)
        clash = torch.as_tensor(seen[positions] == keys)
        if not clash.any():
            break
        redrawn = torch.randint(1, data.num_items + 1, (int(clash.sum()),), generator=generator)
        negatives[clash] = redrawn
    return negatives
