"""Full-ranking retrieval, candidate reranking, and the metrics of a ranked list.

Both paths are batched over users and vectorised: one score matrix per batch, the user's history
and the padding item masked to -inf, then ``topk`` (retrieval) or a stable sort (reranking), on
the job's device (the GPU when there is one; :func:`seqrerank.distributed.place`). In a job of
several processes each rank scores every ``world_size``-th batch and the rows are gathered back
in user order; a user's batch is the same as with one process, and so are its scores.
"""

from __future__ import annotations

import numpy as np
import torch

from seqrerank import distributed
from seqrerank.batching import pad_left
from seqrerank.candidates import RankedLists
from seqrerank.console import progress
from seqrerank.data.dataset import SequenceData
from seqrerank.methods.base import Recommender
from seqrerank.metrics import metrics_from_ranks, target_ranks


@torch.inference_mode()
def retrieve(
    model: Recommender,
    data: SequenceData,
    split: str,
    top_k: int,
) -> RankedLists:
    """Top-``top_k`` items of every user over all items, the user's history excluded (unless the
    dataset keeps repeats, see :class:`SequenceData`). The lists of the ``train`` task, which
    rerankers train on, also exclude the user's validation and test items: they lie in that
    task's future. A method that builds whole lists itself (:meth:`Recommender.ranked_lists`)
    returns them instead."""
    model.eval()
    built = model.ranked_lists(data, split, top_k)
    if built is not None:
        return built
    target = distributed.place(model)
    inputs, targets = data.inputs(split), data.targets(split)
    # A later item equal to the target (a kept repeat) stays: it is the answer.
    future = data.val_and_test_items() if split == "train" else None
    top_k = min(top_k, data.num_items)
    items = np.zeros((data.num_users, top_k), dtype=np.int64)
    scores = np.zeros((data.num_users, top_k), dtype=np.float32)
    batches = distributed.shard(by_length(inputs, model.score_batch_size))
    for rows in progress(batches, desc=f"ranking {split}"):
        histories = pad_left([inputs[row] for row in rows]).to(target)
        users = torch.as_tensor(rows + 1, device=target)
        # A new tensor from every model (Recommender.score), so it is masked in place: a copy of
        # the batch's scores took a tenth of Beauty's full ranking.
        batch_scores = model.score(users, histories).float()
        if not data.repeats:
            batch_scores.scatter_(1, histories, float("-inf"))  # the user's history
        if future is not None:
            later = torch.as_tensor(future[rows])
            later = later.masked_fill(later == torch.as_tensor(targets[rows, None]), 0)
            batch_scores.scatter_(1, later.to(target), float("-inf"))
        # The padding item, also for a batch's longest history, which has no padding.
        batch_scores[:, 0] = float("-inf")
        top_scores, top_items = top_k_columns(batch_scores, top_k)
        # A list longer than the items left to rank ends in padding.
        top_items[torch.isinf(top_scores)] = 0
        items[rows], scores[rows] = top_items.cpu().numpy(), top_scores.cpu().numpy()
    items, scores = distributed.gather_rows(batches, items, scores)
    return RankedLists(split, data.users, targets, items, scores)


def top_k_columns(scores: torch.Tensor, k: int, stripes: int = 8) -> torch.return_types.topk:
    """``scores.topk(k, dim=1)``: the same values in the same order, and the columns of those
    values (among equal values, of any of them). Written by hand because torch's CPU top-k costs
    ~10 ns per score and full ranking spent more time in it than in scoring; no library we use
    has a faster exact one. The columns are cut into ``stripes`` stripes: every column of the top
    k lies under one of the k best columns of the stripes' elementwise maximum, so only those
    ``stripes * k`` scores (and the few columns past the last whole stripe) go to torch.topk
    (1.5-1.8x faster on Beauty's 12,102 items for k = 20 to 200; benchmarks/retrieval_beauty.py).
    """
    rows, columns = scores.shape
    width = columns // stripes
    # On a GPU torch.topk is a radix select already bound by memory bandwidth.
    if width < 2 * k or scores.device.type != "cpu":
        return scores.topk(min(k, columns), dim=1)
    striped = scores[:, : width * stripes].unflatten(1, (stripes, width))
    best = striped.amax(dim=1).topk(k, dim=1, sorted=False).indices
    offsets = width * torch.arange(stripes, device=scores.device)
    candidates = torch.cat(
        [
            striped.gather(2, best[:, None, :].expand(rows, stripes, k)).flatten(1),
            scores[:, width * stripes :],
        ],
        dim=1,
    )
    candidate_columns = torch.cat(
        [
            (best[:, None, :] + offsets[:, None]).flatten(1),
            torch.arange(width * stripes, columns, device=scores.device).expand(rows, -1),
        ],
        dim=1,
    )
    top_scores, picked = candidates.topk(k, dim=1)
    return torch.return_types.topk((top_scores, candidate_columns.gather(1, picked)))


def by_length(histories: list[np.ndarray], batch_size: int) -> list[np.ndarray]:
    """Row batches of users with similar history lengths, so little of a batch is padding."""
    order = np.argsort([len(h) for h in histories], kind="stable")
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


@torch.inference_mode()
def rerank(
    model: Recommender,
    data: SequenceData,
    candidates: RankedLists,
) -> RankedLists:
    """Candidate lists reordered by ``model``'s scores. Ties keep the incoming order, which is
    Stage 1's rank in retrieval mode and a random order in ground-truth mode. A method that
    scores whole lists (:meth:`Recommender.score_lists`) is asked for all of them at once."""
    model.eval()
    list_scores = model.score_lists(data, candidates)
    if list_scores is not None:
        return reorder(candidates, torch.as_tensor(np.asarray(list_scores, dtype=np.float32)))
    target = distributed.place(model)
    inputs = data.inputs(candidates.split)
    row_histories = [inputs[user - 1] for user in candidates.users]
    items = np.zeros_like(candidates.items)
    scores = np.zeros(candidates.items.shape, dtype=np.float32)
    batches = distributed.shard(by_length(row_histories, model.score_batch_size))
    for rows in progress(batches, desc="reranking"):
        users = torch.as_tensor(candidates.users[rows], device=target)
        histories = pad_left([row_histories[row] for row in rows]).to(target)
        cands = torch.as_tensor(candidates.items[rows], device=target)
        batch_scores = model.score_candidates(users, histories, cands).float()
        batch_scores = batch_scores.masked_fill(cands == 0, float("-inf"))
        order = torch.sort(batch_scores, dim=1, descending=True, stable=True).indices
        items[rows] = cands.gather(1, order).cpu().numpy()
        scores[rows] = batch_scores.gather(1, order).cpu().numpy()
    items, scores = distributed.gather_rows(batches, items, scores)
    return RankedLists(candidates.split, candidates.users, candidates.targets, items, scores)


def reorder(candidates: RankedLists, scores: torch.Tensor) -> RankedLists:
    """``candidates`` sorted by ``scores`` [users, K], best first, ties in the incoming order,
    padding (item 0) last."""
    cands = torch.as_tensor(candidates.items)
    scores = scores.float().masked_fill(cands == 0, float("-inf"))
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    return RankedLists(
        candidates.split,
        candidates.users,
        candidates.targets,
        cands.gather(1, order).numpy(),
        scores.gather(1, order).numpy(),
    )


def evaluate(lists: RankedLists) -> dict[str, float]:
    return metrics_from_ranks(target_ranks(lists.items, lists.targets))


def cell_metrics(lists: RankedLists) -> dict:
    """Metrics over all users (a target missing from the list is a miss), and over the users
    whose target is in the list (``conditional``), which isolates the reranker's own quality."""
    ranks = target_ranks(lists.items, lists.targets)
    found = ranks > 0
    return {
        **metrics_from_ranks(ranks),
        "users": len(ranks),
        "target_in_list": int(found.sum()),
        "conditional": metrics_from_ranks(ranks[found]),
    }
