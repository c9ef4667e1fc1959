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


def index_batches(
    size: int, batch_size: int, generator: torch.Generator | None = None
) -> Iterator[torch.Tensor]:
    """Indices 0..size-1 in batches, shuffled when a generator is given."""
    order = torch.randperm(size, generator=generator) if generator is not None else None
    for start in range(0, size, batch_size):
        stop = min(start + batch_size, size)
        yield order[start:stop] if order is not None else torch.arange(start, stop)
