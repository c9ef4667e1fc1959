"""Features of (user, candidate) pairs for a learning-to-rank reranker (``methods/ltr.py``).

The features a recommender engineer builds for a second stage, from what the workflow hands a
method and nothing else:

* per source model (its exported lists): the candidate's rank (``K + 1`` when it is not in the
  source's top K), its score and its gap to the source's best score for the user (NaN when not
  listed: LightGBM learns where missing values go), and how many sources list it;
* the candidate's place in the list being reranked (``input_rank``, ``input_score``);
* popularity: the candidate's share of all interactions, of the users' last items and of their
  last three items (recent popularity, the data having no timestamps), and the ratio of the two;
* item-to-item statistics of the users' sequences with the candidate: consecutive transitions
  from each of the last three items to it (count, and as a share of the last item's transitions),
  from it back to the last item, a recency-weighted sum over the last ``history_window`` items,
  and co-occurrence within ``cooccurrence_window`` positions (count with the last item, sum and
  the best cosine-normalised value over the last items);
* similarity in every modality given (text, image, attributes: on Amazon Beauty the brand and
  category ids, so these are the category features): cosine with the last item, with the mean of
  the last items, and the best over them;
* the user's history length and how often the candidate is in it (repeats; zero for datasets
  prepared with ``repeats: drop``).

Every statistic of a task is computed from that task's inputs alone (for the ``train`` task, every
user's training sequence without its last item): the transitions into a ``train``-task target are
not counted, as the transition into a test target is not counted at test time. Features therefore
mean the same in the lists a ranker trains on and those it is evaluated on; only the source
models' own scores differ (they were trained on the ``train``-task targets).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from seqrerank.candidates import RankedLists
from seqrerank.data.dataset import SequenceData
from seqrerank.features import ItemFeatures

USER_CHUNK = 2048
"""Users whose features are computed at once (bounds the memory of the pair lookups)."""


@dataclass(frozen=True)
class PairCounts:
    """Counts of ordered item pairs ``(a, b)``, as sorted keys ``a * width + b``."""

    keys: np.ndarray
    counts: np.ndarray
    width: int

    @classmethod
    def of(cls, first: np.ndarray, second: np.ndarray, width: int) -> PairCounts:
        keys, counts = np.unique(first * width + second, return_counts=True)
        return cls(keys, counts.astype(np.float64), width)

    def lookup(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """Counts of the pairs (0 for a pair never seen, and for padding item 0)."""
        query = first * self.width + second
        if len(self.keys) == 0:
            return np.zeros(query.shape)
        index = np.minimum(np.searchsorted(self.keys, query), len(self.keys) - 1)
        return np.where(self.keys[index] == query, self.counts[index], 0.0)


@dataclass(frozen=True)
class TaskStatistics:
    """What the users' input sequences of one task say about items."""

    popularity: np.ndarray  # [N + 1] share of all interactions
    recent: np.ndarray  # [N + 1] share of the users' last items
    recent3: np.ndarray  # [N + 1] share of the users' last three items
    counts: np.ndarray  # [N + 1] interactions
    transitions: PairCounts  # a -> b, consecutive
    out_degree: np.ndarray  # [N + 1] transitions from a
    cooccurrence: PairCounts  # a, b within the window, both orders

    @classmethod
    def of(cls, inputs: Sequence[np.ndarray], num_items: int, window: int) -> TaskStatistics:
        width = num_items + 1
        flat = np.concatenate(inputs) if inputs else np.zeros(0, dtype=np.int64)
        owner = np.repeat(np.arange(len(inputs)), [len(seq) for seq in inputs])
        counts = np.bincount(flat, minlength=width).astype(np.float64)
        last = np.array([seq[-1] for seq in inputs if len(seq)], dtype=np.int64)
        last3 = np.concatenate([seq[-3:] for seq in inputs]) if inputs else flat
        users = max(len(inputs), 1)
        pairs = [
            (flat[:-d][owner[:-d] == owner[d:]], flat[d:][owner[:-d] == owner[d:]])
            for d in range(1, window + 1)
            if d < len(flat)
        ]
        first = [a for a, _ in pairs] or [np.zeros(0, dtype=np.int64)]
        second = [b for _, b in pairs] or [np.zeros(0, dtype=np.int64)]
        step_from, step_to = first[0], second[0]
        return cls(
            popularity=counts / max(counts.sum(), 1.0),
            recent=np.bincount(last, minlength=width) / users,
            recent3=np.bincount(last3, minlength=width) / users,
            counts=counts,
            transitions=PairCounts.of(step_from, step_to, width),
            out_degree=np.bincount(step_from, minlength=width).astype(np.float64),
            cooccurrence=PairCounts.of(
                np.concatenate([*first, *second]), np.concatenate([*second, *first]), width
            ),
        )


class ListFeatures:
    """The feature matrix of candidate lists, for one dataset, its sources' exported lists
    (by source and split) and its item features (by modality)."""

    def __init__(
        self,
        data: SequenceData,
        retrieved: Mapping[str, Mapping[str, RankedLists]],
        sources: Sequence[str],
        features: Mapping[str, ItemFeatures] | None = None,
        history_window: int = 10,
        cooccurrence_window: int = 5,
    ):
        self.data = data
        self.retrieved = retrieved
        self.sources = list(sources)
        self.history_window = history_window
        self.cooccurrence_window = cooccurrence_window
        self.modalities = {
            modality: _unit_rows(f) for modality, f in sorted((features or {}).items())
        }
        self._statistics: dict[str, TaskStatistics] = {}

    @property
    def names(self) -> list[str]:
        names = []
        for source in self.sources:
            names += [f"{source}_rank", f"{source}_score", f"{source}_score_gap"]
        names += ["sources_listing", "input_rank", "input_score", "history_length"]
        names += ["popularity", "popularity_recent", "popularity_recent3", "popularity_trend"]
        names += ["transitions_last1", "transitions_last2", "transitions_last3"]
        names += ["transition_share_last1", "transitions_back_last1", "transitions_recent"]
        names += ["cooccurrence_last1", "cooccurrence_recent", "cooccurrence_cosine_max"]
        for modality in self.modalities:
            names += [f"{modality}_similarity_{kind}" for kind in ("last", "mean", "max")]
        names += ["times_in_history"]
        return names

    def statistics(self, split: str) -> TaskStatistics:
        if split not in self._statistics:
            self._statistics[split] = TaskStatistics.of(
                self.data.inputs(split), self.data.num_items, self.cooccurrence_window
            )
        return self._statistics[split]

    def matrix(self, lists: RankedLists) -> np.ndarray:
        """[users * K, features] float32, the rows of each user's candidates in list order
        (padding items included: the caller drops them)."""
        parts = [
            self._chunk(lists, rows)
            for rows in np.array_split(np.arange(len(lists)), max(1, -(-len(lists) // USER_CHUNK)))
        ]
        return np.concatenate(parts) if parts else np.zeros((0, len(self.names)), np.float32)

    def _chunk(self, lists: RankedLists, rows: np.ndarray) -> np.ndarray:
        split = lists.split
        stats = self.statistics(split)
        users = lists.users[rows]
        cands = lists.items[rows]  # [B, K]
        num, k = cands.shape
        inputs = self.data.inputs(split)
        histories = [inputs[user - 1] for user in users]
        recent = _last_items(histories, self.history_window)  # [B, W], most recent last
        columns: list[np.ndarray] = []

        listing = np.zeros((num, k))
        for source in self.sources:
            rank, score, gap = self._source_columns(source, split, users, cands)
            columns += [rank, score, gap]
            listing += np.isfinite(score)
        input_score = lists.scores[rows].astype(np.float64)
        columns += [
            listing,
            np.broadcast_to(np.arange(1, k + 1, dtype=np.float64), (num, k)),
            np.where(np.isfinite(input_score), input_score, np.nan),
            np.broadcast_to(np.array([len(h) for h in histories], np.float64)[:, None], (num, k)),
        ]

        popularity = stats.popularity[cands]
        columns += [
            popularity * 1e4,
            stats.recent[cands] * 1e4,
            stats.recent3[cands] * 1e4,
            np.where(popularity > 0, stats.recent3[cands] / np.maximum(popularity, 1e-12), 0.0),
        ]

        last = [np.broadcast_to(recent[:, -j, None], (num, k)) for j in (1, 2, 3)]
        steps = [stats.transitions.lookup(item, cands) for item in last]
        out_degree = stats.out_degree[last[0]]
        window = recent.shape[1]
        pairs_from = np.broadcast_to(recent[:, None, :], (num, k, window))
        pairs_to = np.broadcast_to(cands[:, :, None], (num, k, window))
        decay = 1.0 / np.arange(window, 0, -1, dtype=np.float64)  # 1 for the last item
        recent_steps = stats.transitions.lookup(pairs_from, pairs_to)
        together = stats.cooccurrence.lookup(pairs_from, pairs_to)
        norm = np.sqrt(stats.counts[pairs_from] * stats.counts[pairs_to])
        cosine = np.where(norm > 0, together / np.maximum(norm, 1e-12), 0.0)
        columns += [
            *steps,
            np.where(out_degree > 0, steps[0] / np.maximum(out_degree, 1.0), 0.0),
            stats.transitions.lookup(cands, last[0]),
            (recent_steps * decay).sum(axis=2),
            stats.cooccurrence.lookup(last[0], cands),
            (together * decay).sum(axis=2),
            cosine.max(axis=2),
        ]

        for values, present in self.modalities.values():
            columns += _similarities(values, present, recent, cands)

        width = self.data.num_items + 1
        own = np.concatenate(histories) if histories else np.zeros(0, np.int64)
        owner = np.repeat(np.arange(num), [len(h) for h in histories])
        seen = PairCounts.of(owner, own, width)
        columns.append(seen.lookup(np.arange(num)[:, None], cands))

        return np.stack([np.asarray(c, dtype=np.float32) for c in columns], axis=2).reshape(
            num * k, len(columns)
        )

    def _source_columns(
        self, source: str, split: str, users: np.ndarray, cands: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rank (K + 1 when not listed), score and gap to the best score (NaN when not listed)
        of each candidate in ``source``'s list of the user."""
        if source not in self.retrieved or split not in self.retrieved[source]:
            raise ValueError(
                f"no {split} lists of source {source!r} were given (given: "
                f"{', '.join(sorted(self.retrieved)) or 'none'}); the workflow passes each "
                f"source's retrieved.csv as the named input retrieved_{source}"
            )
        lists = self.retrieved[source][split]
        if len(lists) != self.data.num_users or not np.array_equal(lists.users, self.data.users):
            raise ValueError(f"the {split} lists of source {source!r} are not this dataset's")
        row_items = lists.items[users - 1]  # [B, Ks]
        row_scores = lists.scores[users - 1].astype(np.float64)
        depth = row_items.shape[1]
        match = row_items[:, None, :] == cands[:, :, None]  # [B, K, Ks]
        match &= cands[:, :, None] > 0
        found = match.any(axis=2)
        position = match.argmax(axis=2)
        rank = np.where(found, position + 1, depth + 1).astype(np.float64)
        score = np.take_along_axis(row_scores, position, axis=1)
        score = np.where(found & np.isfinite(score), score, np.nan)
        best = row_scores[:, :1]
        gap = np.where(np.isfinite(score), score - np.where(np.isfinite(best), best, 0.0), np.nan)
        return rank, score, gap


def _last_items(histories: Sequence[np.ndarray], window: int) -> np.ndarray:
    """[users, window]: each history's last ``window`` items, left-padded with 0."""
    out = np.zeros((len(histories), window), dtype=np.int64)
    for row, history in enumerate(histories):
        tail = history[-window:]
        if len(tail):
            out[row, window - len(tail) :] = tail
    return out


def _unit_rows(features: ItemFeatures) -> tuple[np.ndarray, np.ndarray]:
    """Item vectors scaled to unit length (attribute multi-hots are raw 0/1), and presence."""
    values = features.values.float()
    values = values / values.norm(dim=1, keepdim=True).clamp_min(1e-12)
    present = features.present.clone()
    present[0] = False
    return values.numpy(), present.numpy()


def _similarities(
    values: np.ndarray, present: np.ndarray, recent: np.ndarray, cands: np.ndarray
) -> list[np.ndarray]:
    """Cosine of each candidate with the last item, with the mean of the recent items, and the
    best over them (NaN where the candidate, or every recent item, lacks the modality)."""
    parts = [
        _similarities_of(values, present, recent[rows], cands[rows])
        for rows in np.array_split(np.arange(len(cands)), max(1, -(-len(cands) // 128)))
    ]
    return [np.concatenate([part[i] for part in parts]) for i in range(3)]


def _similarities_of(
    values: np.ndarray, present: np.ndarray, recent: np.ndarray, cands: np.ndarray
) -> list[np.ndarray]:
    table = torch.from_numpy(values)
    cand_vectors = table[torch.from_numpy(cands)]  # [B, K, d]
    recent_vectors = table[torch.from_numpy(recent)]  # [B, W, d]
    usable = torch.from_numpy(present[recent])  # [B, W]
    similarity = (cand_vectors @ recent_vectors.transpose(1, 2)).numpy()  # [B, K, W]
    mean = (recent_vectors * usable[..., None]).sum(dim=1)
    mean = mean / mean.norm(dim=1, keepdim=True).clamp_min(1e-12)
    mean_similarity = (cand_vectors @ mean[:, :, None]).squeeze(2).numpy()
    usable_np = usable.numpy()
    cand_present = present[cands]
    any_usable = usable_np.any(axis=1)[:, None]
    best = np.where(usable_np[:, None, :], similarity, -np.inf).max(axis=2)
    last = np.where(usable_np[:, -1:], similarity[:, :, -1], np.nan)
    return [
        np.where(cand_present, last, np.nan),
        np.where(cand_present & any_usable, mean_similarity, np.nan),
        np.where(cand_present & any_usable, best, np.nan),
    ]
