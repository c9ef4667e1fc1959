"""Ranking metrics checked against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from seqrerank.candidates import RankedLists
from seqrerank.evaluation import cell_metrics, top_k_columns
from seqrerank.metrics import (
    METRIC_COLUMNS,
    format_metrics_table,
    metrics_from_ranks,
    per_user_metrics,
    target_ranks,
)

# Six users: targets at ranks 1, 3, 7, 15 and 25, and one not in the list at all.
RANKS = np.array([1, 3, 0, 7, 15, 25])
# NDCG gains 1/log2(rank + 1): rank 1 -> 1, 3 -> 1/2, 7 -> 1/3, 15 -> 1/4, 25 -> beyond @20.
HAND = {
    "hit@5": 2 / 6,
    "hit@10": 3 / 6,
    "hit@20": 4 / 6,
    "ndcg@5": (1 + 1 / 2) / 6,
    "ndcg@10": (1 + 1 / 2 + 1 / 3) / 6,
    "ndcg@20": (1 + 1 / 2 + 1 / 3 + 1 / 4) / 6,
}


def lists(items: list[list[int]], targets: list[int]) -> RankedLists:
    items_array = np.array(items)
    return RankedLists(
        "val",
        np.arange(1, len(items) + 1),
        np.array(targets),
        items_array,
        np.full(items_array.shape, np.nan, dtype=np.float32),
    )


# --- metrics from ranks -------------------------------------------------------------------


@pytest.mark.parametrize("k", [5, 10, 20])
def test_hit_at_k_by_hand(k: int) -> None:
    assert metrics_from_ranks(RANKS)[f"hit@{k}"] == pytest.approx(HAND[f"hit@{k}"])


@pytest.mark.parametrize("k", [5, 10, 20])
def test_ndcg_at_k_by_hand(k: int) -> None:
    assert metrics_from_ranks(RANKS)[f"ndcg@{k}"] == pytest.approx(HAND[f"ndcg@{k}"])


@pytest.mark.parametrize("k", [5, 10, 20])
def test_recall_equals_hit_with_one_target_per_user(k: int) -> None:
    metrics = metrics_from_ranks(RANKS)
    assert metrics[f"recall@{k}"] == pytest.approx(HAND[f"hit@{k}"])


def test_rank_zero_is_a_miss_at_every_k() -> None:
    assert set(metrics_from_ranks(np.array([0, 0, 0])).values()) == {0.0}


def test_target_at_rank_one_scores_one_at_every_k() -> None:
    assert set(metrics_from_ranks(np.array([1, 1])).values()) == {1.0}


def test_rank_k_is_inside_the_cutoff_and_rank_k_plus_one_outside() -> None:
    at_five, at_six = metrics_from_ranks(np.array([5])), metrics_from_ranks(np.array([6]))
    assert at_five["hit@5"] == 1.0
    assert at_five["ndcg@5"] == pytest.approx(1 / math.log2(6))
    assert at_six["hit@5"] == 0.0 and at_six["ndcg@5"] == 0.0
    assert at_six["ndcg@10"] == pytest.approx(1 / math.log2(7))


def test_metrics_come_in_the_comparison_table_column_order() -> None:
    assert tuple(metrics_from_ranks(RANKS)) == METRIC_COLUMNS
    assert METRIC_COLUMNS == (
        "recall@5",
        "recall@10",
        "recall@20",
        "ndcg@5",
        "ndcg@10",
        "ndcg@20",
        "hit@5",
        "hit@10",
        "hit@20",
    )


def test_no_users_gives_nan_metrics() -> None:
    metrics = metrics_from_ranks(np.array([], dtype=np.int64))
    assert len(metrics) == len(METRIC_COLUMNS)
    assert all(math.isnan(value) for value in metrics.values())


def test_per_user_metrics_keep_one_value_per_user() -> None:
    values = per_user_metrics(RANKS)
    assert values["hit@10"].tolist() == [1, 1, 0, 1, 0, 0]
    assert values["ndcg@20"] == pytest.approx([1, 1 / 2, 0, 1 / 3, 1 / 4, 0])


# --- target ranks -------------------------------------------------------------------------


def test_target_ranks_are_one_based_positions_and_zero_when_absent() -> None:
    ranked = np.array([[5, 3, 9], [1, 2, 4], [7, 8, 6], [2, 0, 0]])
    targets = np.array([5, 4, 3, 2])
    assert target_ranks(ranked, targets).tolist() == [1, 3, 0, 1]


def test_padding_item_never_matches_a_real_target() -> None:
    assert target_ranks(np.array([[4, 0, 0]]), np.array([7])).tolist() == [0]


# --- the printed table --------------------------------------------------------------------


def test_metrics_table_has_rows_recall_ndcg_hit_and_columns_at_5_10_20() -> None:
    lines = format_metrics_table(metrics_from_ranks(RANKS)).splitlines()
    assert lines[0].split() == ["Metric", "@5", "@10", "@20"]
    assert [line.split()[0] for line in lines[1:]] == ["Recall", "Ndcg", "Hit"]
    assert lines[1].split()[1:] == [f"{HAND[f'hit@{k}']:.4f}" for k in (5, 10, 20)]
    assert lines[2].split()[1:] == [f"{HAND[f'ndcg@{k}']:.4f}" for k in (5, 10, 20)]
    assert lines[3].split()[1:] == [f"{HAND[f'hit@{k}']:.4f}" for k in (5, 10, 20)]


def test_metrics_table_values_are_right_aligned_under_their_column() -> None:
    lines = format_metrics_table(metrics_from_ranks(RANKS)).splitlines()
    header_ends = [lines[0].index(label) + len(label) for label in ("@5", "@10", "@20")]
    for line in lines[1:]:
        assert len(line) == len(lines[0])
        value_ends = [line.index(value) + len(value) for value in line.split()[1:]]
        assert value_ends == header_ends


# --- metrics of a grid cell ---------------------------------------------------------------


def test_cell_metrics_count_a_missing_target_as_a_miss() -> None:
    # Targets at rank 1 and 2 for two users; not in the list for the other two.
    cell = cell_metrics(lists([[1, 2], [3, 4], [5, 6], [7, 8]], [1, 4, 9, 9]))
    assert cell["users"] == 4
    assert cell["target_in_list"] == 2
    assert cell["hit@5"] == pytest.approx(2 / 4)
    assert cell["ndcg@5"] == pytest.approx((1 + 1 / math.log2(3)) / 4)


def test_cell_conditional_metrics_cover_only_users_whose_target_is_in_the_list() -> None:
    cell = cell_metrics(lists([[1, 2], [3, 4], [5, 6], [7, 8]], [1, 4, 9, 9]))
    conditional = cell["conditional"]
    assert tuple(conditional) == METRIC_COLUMNS
    assert conditional["hit@5"] == 1.0
    assert conditional["ndcg@5"] == pytest.approx((1 + 1 / math.log2(3)) / 2)


def test_cell_conditional_metrics_are_nan_when_no_target_is_in_any_list() -> None:
    cell = cell_metrics(lists([[1, 2], [3, 4]], [9, 9]))
    assert cell["target_in_list"] == 0 and cell["hit@20"] == 0.0
    assert all(math.isnan(value) for value in cell["conditional"].values())


@pytest.mark.parametrize(("columns", "k"), [(12_102, 200), (12_102, 20), (1_001, 30), (50, 20)])
def test_top_k_columns_gives_torch_topk_values_and_columns_holding_them(columns, k) -> None:
    generator = torch.Generator().manual_seed(columns + k)
    # Few distinct values (many ties) and masked columns, as a masked score matrix has.
    scores = torch.randint(0, 40, (64, columns), generator=generator).float()
    scores[torch.rand(scores.shape, generator=generator) < 0.3] = float("-inf")
    scores[0, :-3] = float("-inf")  # fewer real scores than k
    expected = scores.topk(k, dim=1)
    values, picked = top_k_columns(scores, k)
    assert torch.equal(values, expected.values)
    assert torch.equal(scores.gather(1, picked), values)
    finite = values.isfinite()
    for row in range(len(scores)):
        assert len(set(picked[row][finite[row]].tolist())) == int(finite[row].sum())


def test_top_k_columns_finds_a_best_column_past_the_last_whole_stripe() -> None:
    scores = torch.zeros(2, 1_605)
    scores[:, -1] = 5.0  # 1,605 = 8 stripes of 200 and five columns left over
    assert top_k_columns(scores, 10, stripes=8).indices[:, 0].tolist() == [1_604, 1_604]
