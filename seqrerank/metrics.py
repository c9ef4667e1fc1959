"""Ranking metrics computed from the rank of each user's single target.

With one target per user (leave-one-out), Recall@K equals Hit@K: both are 1 when the target is in
the top K. NDCG@K is 1 / log2(rank + 1) for a target at 1-based ``rank`` <= K. A rank of 0 means
the target is not in the list at all (a miss at every K).
"""

from __future__ import annotations

import numpy as np

KS = (5, 10, 20)
METRIC_NAMES = ("recall", "ndcg", "hit")
METRIC_COLUMNS = tuple(f"{name}@{k}" for name in METRIC_NAMES for k in KS)


def target_ranks(ranked_items: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1-based position of each row's target in ``ranked_items`` [users, K]; 0 where absent."""
    hits = ranked_items == targets[:, None]
    return np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, 0)


def per_user_metrics(ranks: np.ndarray, ks: tuple[int, ...] = KS) -> dict[str, np.ndarray]:
    """Per-user metric values, kept so later work can test significance."""
    ranks = np.asarray(ranks)
    found = ranks > 0
    out: dict[str, np.ndarray] = {}
    for k in ks:
        in_top = found & (ranks <= k)
        gain = np.zeros(len(ranks))
        gain[in_top] = 1.0 / np.log2(ranks[in_top] + 1.0)
        out[f"recall@{k}"] = in_top.astype(float)
        out[f"ndcg@{k}"] = gain
        out[f"hit@{k}"] = in_top.astype(float)
    return out


def metrics_from_ranks(ranks: np.ndarray, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """Mean of every metric over users, in the column order of the comparison table."""
    values = per_user_metrics(ranks, ks)
    if len(ranks) == 0:
        return {name: float("nan") for name in values}
    order = [f"{name}@{k}" for name in METRIC_NAMES for k in ks]
    return {name: float(values[name].mean()) for name in order}


def format_metrics_table(metrics: dict[str, float], ks: tuple[int, ...] = KS) -> str:
    """The seed's table: rows Recall / Ndcg / Hit, columns @5 @10 @20."""
    lines = ["Metric   " + "".join(f"{'@' + str(k):>10}" for k in ks)]
    for name in METRIC_NAMES:
        row = "".join(f"{metrics[f'{name}@{k}']:>10.4f}" for k in ks)
        lines.append(f"{name.capitalize():<9}{row}")
    return "\n".join(lines)
