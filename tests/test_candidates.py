"""Candidate lists: ground-truth sampling, the CSV round trip, full-ranking retrieval and
reranking."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from seqrerank.candidates import (
    RankedLists,
    read_ranked_lists,
    sample_ground_truth,
    write_ranked_lists,
)
from seqrerank.data.dataset import SPLITS, SequenceData
from seqrerank.evaluation import rerank, retrieve
from seqrerank.methods.lrurec import LRURec
from seqrerank.methods.popularity import Popularity


def popularity(counts: list[float]) -> Popularity:
    """A real Popularity model whose item counts (index 0 = padding) are set by hand."""
    model = Popularity(len(counts) - 1)
    model.counts.copy_(torch.tensor(counts, dtype=torch.float32))
    return model


def candidate_lists(items: list[list[int]], data: SequenceData, split: str = "val") -> RankedLists:
    users = np.arange(1, len(items) + 1)
    array = np.array(items)
    scores = np.full(array.shape, np.nan, dtype=np.float32)
    return RankedLists(split, users, data.targets(split)[: len(items)], array, scores)


# --- ground-truth candidates ----------------------------------------------------------------


@pytest.fixture(scope="module")
def ground_truth(demo_data: SequenceData) -> RankedLists:
    return sample_ground_truth(demo_data, "test", num_negatives=19, seed=42)


def test_ground_truth_lists_hold_the_target_exactly_once(ground_truth: RankedLists) -> None:
    assert ground_truth.items.shape[1] == 20
    counts = (ground_truth.items == ground_truth.targets[:, None]).sum(axis=1)
    assert (counts == 1).all()


def test_ground_truth_lists_hold_twenty_distinct_real_items(
    ground_truth: RankedLists, demo_data: SequenceData
) -> None:
    for row in ground_truth.items:
        assert len(set(row.tolist())) == 20
    assert ground_truth.items.min() >= 1 and ground_truth.items.max() <= demo_data.num_items


def test_ground_truth_negatives_are_never_in_the_users_sequence(
    ground_truth: RankedLists, demo_data: SequenceData
) -> None:
    for row, target, sequence in zip(
        ground_truth.items, ground_truth.targets, demo_data.full_sequences(), strict=True
    ):
        negatives = set(row.tolist()) - {int(target)}
        assert len(negatives) == 19
        assert not negatives & set(sequence.tolist())


def test_ground_truth_target_position_is_random(ground_truth: RankedLists) -> None:
    positions = np.argmax(ground_truth.items == ground_truth.targets[:, None], axis=1)
    per_position = np.bincount(positions, minlength=20)
    expected = len(positions) / 20  # about 48 users per position
    assert per_position.min() > expected / 2 and per_position.max() < expected * 2


def test_ground_truth_is_deterministic_by_seed(
    ground_truth: RankedLists, demo_data: SequenceData
) -> None:
    again = sample_ground_truth(demo_data, "test", num_negatives=19, seed=42)
    other_seed = sample_ground_truth(demo_data, "test", num_negatives=19, seed=43)
    assert np.array_equal(again.items, ground_truth.items)
    assert not np.array_equal(other_seed.items, ground_truth.items)


def test_ground_truth_of_each_split_has_that_splits_targets(demo_data: SequenceData) -> None:
    for split in SPLITS:
        lists = sample_ground_truth(demo_data, split, num_negatives=19, seed=42)
        assert lists.split == split
        assert np.array_equal(lists.targets, demo_data.targets(split))
        assert np.array_equal(lists.users, demo_data.users)


def test_ground_truth_with_more_negatives_than_items_fails(hand_data: SequenceData) -> None:
    with pytest.raises(ValueError, match="19 negatives requested but only 9 items"):
        sample_ground_truth(hand_data, "val", num_negatives=19, seed=0)


# --- the CSV format ---------------------------------------------------------------------------


def test_ranked_lists_round_trip_through_csv(tmp_path: Path) -> None:
    val = RankedLists(
        "val",
        np.array([1, 2]),
        np.array([4, 7]),
        np.array([[4, 2, 9], [3, 0, 0]]),
        np.array([[2.5, -1.25, 0.125], [0.5, -np.inf, -np.inf]], dtype=np.float32),
    )
    test = RankedLists(
        "test",
        np.array([1, 2]),
        np.array([5, 8]),
        np.array([[8, 5, 1], [2, 8, 6]]),
        np.full((2, 3), np.nan, dtype=np.float32),
    )
    path = tmp_path / "lists.csv"
    write_ranked_lists(path, [val, test])
    read = read_ranked_lists(path)
    assert list(read) == ["val", "test"]
    for original in (val, test):
        copy = read[original.split]
        assert copy.split == original.split
        assert np.array_equal(copy.users, original.users)
        assert np.array_equal(copy.targets, original.targets)
        assert np.array_equal(copy.items, original.items)
        np.testing.assert_allclose(copy.scores, original.scores, rtol=1e-5)


def test_ranked_lists_file_has_one_row_per_split_and_user(tmp_path: Path) -> None:
    lists = RankedLists(
        "val", np.array([1]), np.array([3]), np.array([[3, 1]]), np.array([[1.5, 0.5]])
    )
    write_ranked_lists(tmp_path / "lists.csv", [lists])
    lines = (tmp_path / "lists.csv").read_text().splitlines()
    assert lines == ["split,user,target,items,scores", "val,1,3,3 1,1.5 0.5"]


def test_head_keeps_the_first_k_items(tmp_path: Path) -> None:
    lists = RankedLists(
        "val", np.array([1]), np.array([3]), np.array([[3, 1, 2]]), np.zeros((1, 3))
    )
    assert lists.head(2).items.tolist() == [[3, 1]]
    assert lists.head(50).items.tolist() == [[3, 1, 2]]


# --- retrieval --------------------------------------------------------------------------------

# Item i (1..9) bought 10 - i times: the most popular items are the users' own history.
COUNTS = [0, 9, 8, 7, 6, 5, 4, 3, 2, 1]


def test_retrieve_ranks_by_score_without_the_users_history(hand_data: SequenceData) -> None:
    lists = retrieve(popularity(COUNTS), hand_data, "val", top_k=3)
    # Histories: [1 2 3], [6 7], [2 4].
    assert lists.items.tolist() == [[4, 5, 6], [1, 2, 3], [1, 3, 5]]
    assert lists.targets.tolist() == hand_data.val.tolist()
    assert np.all(np.diff(lists.scores, axis=1) <= 0)


def test_retrieve_never_returns_padding_even_when_it_scores_highest(
    hand_data: SequenceData,
) -> None:
    # User 1 has the longest history of the batch, so its row of the batch has no padding.
    lists = retrieve(popularity([100, *COUNTS[1:]]), hand_data, "val", top_k=3)
    assert lists.items.tolist() == [[4, 5, 6], [1, 2, 3], [1, 3, 5]]


def test_retrieve_for_test_also_excludes_the_val_item(hand_data: SequenceData) -> None:
    lists = retrieve(popularity(COUNTS), hand_data, "test", top_k=3)
    # Histories: [1 2 3 4], [6 7 8], [2 4 6].
    assert lists.items.tolist() == [[5, 6, 7], [1, 2, 3], [1, 3, 5]]


def test_train_task_lists_hold_no_val_or_test_item(hand_data: SequenceData) -> None:
    lists = retrieve(popularity(COUNTS), hand_data, "train", top_k=4)
    # Histories [1 2], [6], [2]; targets 3, 7, 4; later items (4, 5), (8, 9), (6, 8).
    assert lists.items.tolist() == [[3, 6, 7, 8], [1, 2, 3, 4], [1, 3, 4, 5]]


def test_train_task_lists_of_a_trained_model_hold_no_val_or_test_item(
    demo_data: SequenceData,
) -> None:
    model = LRURec(num_items=demo_data.num_items, hidden=16, blocks=1, max_len=20)
    lists = retrieve(model, demo_data, "train", top_k=100)
    later = demo_data.val_and_test_items()
    assert not (lists.items[:, :, None] == later[:, None, :]).any()


def test_kept_repeats_leave_a_repeated_target_rankable() -> None:
    # User 1 buys item 2 again as its test item (and item 1 again as its train target).
    data = SequenceData(
        num_items=5,
        train=[np.array([1, 2, 1]), np.array([3, 4])],
        val=np.array([3, 5]),
        test=np.array([2, 1]),
        repeats=True,
    )
    model = popularity([0, 5, 4, 3, 2, 1])
    test = retrieve(model, data, "test", top_k=5)
    assert test.items[0].tolist()[:2] == [1, 2]  # history is not masked: the target is ranked
    train = retrieve(model, data, "train", top_k=5)
    # The train target (1) stays though it is in history; the val (3) and test (2) items go.
    assert train.items[0].tolist() == [1, 4, 5, 0, 0]


def test_retrieve_pads_with_zero_when_fewer_items_are_left_than_asked(
    hand_data: SequenceData,
) -> None:
    lists = retrieve(popularity(COUNTS), hand_data, "test", top_k=50)
    assert lists.items.shape == (3, 9)  # top_k is capped at the number of items
    assert lists.items[0].tolist() == [5, 6, 7, 8, 9, 0, 0, 0, 0]
    assert lists.items[1].tolist() == [1, 2, 3, 4, 5, 9, 0, 0, 0]


@pytest.mark.parametrize("split", SPLITS)
def test_retrieve_never_returns_a_history_item_or_padding(
    demo_data: SequenceData, split: str
) -> None:
    model = LRURec(num_items=demo_data.num_items, hidden=16, blocks=1, max_len=20)
    lists = retrieve(model, demo_data, split, top_k=100)
    assert lists.items.shape == (demo_data.num_users, 100)
    assert (lists.items > 0).all()
    for row, history in zip(lists.items, demo_data.inputs(split), strict=True):
        assert not set(row.tolist()) & set(history.tolist())
        assert len(set(row.tolist())) == 100


# --- reranking --------------------------------------------------------------------------------


def test_rerank_ties_keep_the_incoming_order(hand_data: SequenceData) -> None:
    candidates = candidate_lists([[5, 3, 9, 1], [9, 1, 5, 3]], hand_data)
    reranked = rerank(popularity([0] + [1] * 9), hand_data, candidates)
    assert reranked.items.tolist() == candidates.items.tolist()


def test_rerank_orders_by_score_and_breaks_ties_by_incoming_order(
    hand_data: SequenceData,
) -> None:
    counts = [0, 1, 0, 2, 0, 1, 0, 2, 0, 0]  # items 3 and 7 tie on top, 1 and 5 below
    candidates = candidate_lists([[5, 3, 7, 1], [1, 7, 5, 3]], hand_data)
    reranked = rerank(popularity(counts), hand_data, candidates)
    assert reranked.items.tolist() == [[3, 7, 5, 1], [7, 3, 1, 5]]
    assert reranked.scores.tolist() == [[2, 2, 1, 1], [2, 2, 1, 1]]


def test_rerank_puts_padding_last(hand_data: SequenceData) -> None:
    candidates = candidate_lists([[0, 9, 0, 8]], hand_data)
    reranked = rerank(popularity(COUNTS), hand_data, candidates)
    assert reranked.items.tolist() == [[8, 9, 0, 0]]


def test_rerank_only_reorders_each_list(demo_data: SequenceData, ground_truth: RankedLists) -> None:
    model = LRURec(num_items=demo_data.num_items, hidden=16, blocks=1, max_len=20)
    reranked = rerank(model, demo_data, ground_truth)
    assert np.array_equal(reranked.users, ground_truth.users)
    assert np.array_equal(reranked.targets, ground_truth.targets)
    assert np.array_equal(np.sort(reranked.items, axis=1), np.sort(ground_truth.items, axis=1))
    assert np.all(np.diff(reranked.scores, axis=1) <= 0)
