"""Turning variable-length item sequences into padded tensors and training examples."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch


def pad_left(seqs: Sequence[np.ndarray], length: int | None = None) -> torch.Tensor:
    """Stack sequences into a [batch, length] tensor, keeping the last ``length`` items and
    padding with item 0 on the left, so the most recent item is always in the last column."""
    if length is None:
        length = max(1, max((len(s) for s in seqs), default=1))
    out = np.zeros((len(seqs), length), dtype=np.int64)
    for row, seq in enumerate(seqs):
        tail = seq[-length:] if len(seq) else seq
        if len(tail):
            out[row, length - len(tail) :] = tail
    return torch.from_numpy(out)


def training_windows(seqs: Sequence[np.ndarray], max_len: int) -> list[np.ndarray]:
    """Cut each sequence into windows of at most ``max_len + 1`` items (inputs plus the shifted
    next-item labels), stepping back from the end so the latest items always form a full window
    and no transition is lost."""
    windows = []
    for seq in seqs:
        if len(seq) < 2:
            continue
        for end in range(len(seq), 1, -max_len):
            windows.append(seq[max(0, end - max_len - 1) : end])
    return windows


def length_bucketed_batches(
    lengths: Sequence[int], batch_size: int, generator: torch.Generator, pool_batches: int = 50
) -> Iterator[torch.Tensor]:
    """Indices 0..len(lengths)-1 in shuffled batches of similar lengths, so that a batch padded to
    its longest sequence is little padding (most sequences are short, a few are long: random
    batches are mostly padding). The shuffled order is cut into pools of ``pool_batches``
    batches, each pool is sorted by length and cut into batches, and the batches are shuffled."""
    lengths = torch.as_tensor(lengths)
    order = torch.randperm(len(lengths), generator=generator)
    batches: list[torch.Tensor] = []
    for pool in order.split(batch_size * pool_batches):
        by_length = pool[torch.argsort(lengths[pool], stable=True)]
        batches.extend(by_length.split(batch_size))
    for position in torch.randperm(len(batches), generator=generator).tolist():
        yield batches[position]


def index_batches(
    size: int, batch_size: int, generator: torch.Generator | None = None
) -> Iterator[torch.Tensor]:
    """Indices 0..size-1 in batches, shuffled when a generator is given."""
    order = torch.randperm(size, generator=generator) if generator is not None else None
    for start in range(0, size, batch_size):
        stop = min(start + batch_size, size)
        yield order[start:stop] if order is not None else torch.arange(start, stop)
