"""Candidate fusion (``fusion``) and the learning-to-rank reranker (``ltr``): fusion by hand, the
no-leak property of fused training lists, and LambdaRank trained on train-task lists,
early-stopped on val, beating its input order on the demo data, saved and loaded exactly."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from seqrerank.candidates import (
    RankedLists,
    forbidden_items,
    read_ranked_lists,
    retrieved_inputs,
)
from seqrerank.data.dataset import SPLITS, SequenceData, as_dataset_files
from seqrerank.evaluation import evaluate, rerank, retrieve
from seqrerank.io import read_json
from seqrerank.methods.fusion import Fusion
from seqrerank.methods.ltr import Queries
from seqrerank.model_files import build_model, load_model, save_model
from seqrerank.pipeline import (
    RerankCandidates,
    method_inputs,
    run_rerank,
    run_reranker_training,
    run_retriever,
)
from seqrerank.ranking_features import ListFeatures, TaskStatistics
from seqrerank.training import TrainSettings

SMALL_LRUREC = {"hidden": 16, "blocks": 1, "dropout": 0.2, "max_len": 10}
RETRIEVAL = TrainSettings(epochs=3, lr=2e-3, batch_size=64, patience=10, seed=7)
# The LTR reranker uses the seed and the metric of its training settings.
RERANK = TrainSettings(epochs=1, lr=0.1, batch_size=1, patience=1, seed=3, metric="ndcg@10")
LTR_PARAMS = {"sources": ["lrurec", "popularity"], "max_rounds": 300, "early_stopping_rounds": 20}
TOP_K = 30


def lists(split: str, targets: list[int], rows: list[list[int]], scores=None) -> RankedLists:
    items = np.array(rows, dtype=np.int64)
    values = np.full(items.shape, np.nan, np.float32) if scores is None else scores
    users = np.arange(1, len(rows) + 1)
    return RankedLists(split, users, np.array(targets), items, np.asarray(values, np.float32))


# --- fusion by hand ----------------------------------------------------------------------------


def hand_sources(hand_data: SequenceData) -> dict[str, dict[str, RankedLists]]:
    """Two sources' val lists for hand_data (histories 1 2 3 | 6 7 | 2 4; targets 4, 8, 6)."""
    a = lists("val", [4, 8, 6], [[4, 5, 6], [8, 9, 1], [6, 8, 1]], [[3, 2, 1]] * 3)
    b = lists(
        "val", [4, 8, 6], [[6, 4, 7], [1, 2, 3], [8, 5, 0]], [[9, 5, 1], [3, 2, 1], [4, 1, 0]]
    )
    return {"a": {"val": a}, "b": {"val": b}}


def test_reciprocal_rank_fusion_scores_and_orders_as_the_formula_says(
    hand_data: SequenceData,
) -> None:
    fusion = Fusion.from_data(hand_data, retrieved=hand_sources(hand_data), sources=["a", "b"])
    fused = retrieve(fusion, hand_data, "val", top_k=5)
    k = 60.0
    # User 1: a = 4 5 6, b = 6 4 7.
    expected = {
        4: 1 / (k + 1) + 1 / (k + 2),
        6: 1 / (k + 3) + 1 / (k + 1),
        5: 1 / (k + 2),
        7: 1 / (k + 3),
    }
    order = sorted(expected, key=lambda item: -expected[item])
    assert order == [4, 6, 5, 7]
    assert fused.items[0].tolist() == [*order, 0]  # four distinct items, then padding
    np.testing.assert_allclose(fused.scores[0, :4], [expected[i] for i in order], rtol=1e-6)
    assert fused.scores[0, 4] == -np.inf
    # User 2: no item in both; equal scores at equal ranks go to the lower item id.
    assert fused.items[1].tolist() == [1, 8, 2, 9, 3]
    # User 3: b's padding is no item.
    assert fused.items[2].tolist() == [8, 6, 5, 1, 0]
    np.testing.assert_array_equal(fused.targets, hand_data.val)


def test_weights_scale_each_sources_contribution(hand_data: SequenceData) -> None:
    fusion = Fusion.from_data(
        hand_data, retrieved=hand_sources(hand_data), sources=["a", "b"], weights=[1.0, 3.0]
    )
    fused = retrieve(fusion, hand_data, "val", top_k=3)
    # User 2: b's first item (1) now beats a's first (8): 3/61 > 1/61 + 1/63.
    assert fused.items[1].tolist() == [1, 2, 3]


def test_minmax_score_fusion_normalises_each_list(hand_data: SequenceData) -> None:
    fusion = Fusion.from_data(
        hand_data, retrieved=hand_sources(hand_data), sources=["a", "b"], method="minmax"
    )
    fused = retrieve(fusion, hand_data, "val", top_k=4)
    # User 1: a -> 4: 1, 5: .5, 6: 0; b -> 6: 1, 4: .5, 7: 0 (min-max of 9 5 1).
    assert fused.items[0].tolist() == [4, 6, 5, 7]
    np.testing.assert_allclose(fused.scores[0], [1.5, 1.0, 0.5, 0.0])


def test_fusion_fails_clearly_without_a_sources_lists(hand_data: SequenceData) -> None:
    fusion = Fusion.from_data(hand_data, retrieved={}, sources=["lrurec"])
    with pytest.raises(ValueError, match="retrieved_lrurec"):
        retrieve(fusion, hand_data, "val", top_k=5)
    with pytest.raises(ValueError, match="methods.fusion.model.sources"):
        Fusion(9)
    with pytest.raises(ValueError, match="one weight per source"):
        Fusion(9, sources=["a", "b"], weights=[1.0])


def test_fusion_refuses_a_source_list_holding_a_val_or_test_item_for_training(
    hand_data: SequenceData,
) -> None:
    # Train task of user 1: history 1 2, target 3; val 4 and test 5 lie in its future.
    leaky = lists("train", [3, 7, 4], [[3, 5, 9], [7, 1, 2], [4, 1, 3]], [[3, 2, 1]] * 3)
    fusion = Fusion.from_data(hand_data, retrieved={"a": {"train": leaky}}, sources=["a"])
    with pytest.raises(ValueError, match="user 1, item 5"):
        retrieve(fusion, hand_data, "train", top_k=3)


# --- on the demo data: sources, fusion, LTR ------------------------------------------------------


@dataclass(frozen=True)
class Trained:
    data: SequenceData
    data_dir: Path
    out: Path
    sources: dict[str, Path]
    features: dict[str, Path]


def lists_of(path: Path) -> dict[str, RankedLists]:
    return read_ranked_lists(path)


@pytest.fixture(scope="module")
def trained(
    demo_dir: Path, demo_data: SequenceData, demo_feature_files: dict, tmp_path_factory
) -> Trained:
    """Popularity and a small LRURec exported as Stage 1 retrievers, their fusion, and an LTR
    reranker trained on the fusion's train-task lists (with the demo's image and text
    features), as the workflow's steps run them."""
    out = tmp_path_factory.mktemp("ltr")
    dataset = as_dataset_files(demo_dir)
    sources = {}
    for method, params in (("popularity", {}), ("lrurec", SMALL_LRUREC)):
        sources[method] = run_stage1(method, dataset, params, out, None)
    fused = run_stage1("fusion", dataset, {"sources": ["lrurec", "popularity"]}, out, sources)
    candidates = RerankCandidates(training=fused, validation=fused, top_k=TOP_K)
    cell = out / "ltr"
    run_reranker_training(
        "ltr",
        dataset,
        LTR_PARAMS,
        RERANK,
        model_path=cell / "model.pt",
        history_path=cell / "history.json",
        checkpoint_dir=cell / "checkpoints",
        features=demo_feature_files,
        candidates=candidates,
        retrieved=sources,
        importance_path=cell / "feature_importance.csv",
    )
    return Trained(demo_data, demo_dir, out, sources, demo_feature_files)


def run_stage1(method, dataset, params, out: Path, retrieved) -> Path:
    cell = out / method
    run_retriever(
        method,
        dataset,
        params,
        RETRIEVAL,
        top_k=50,
        model_path=cell / "model.pt",
        history_path=cell / "history.json",
        candidates_path=cell / "retrieved.csv",
        metrics_path=cell / "metrics.json",
        ranks_path=cell / "ranks.csv",
        checkpoint_dir=cell / "checkpoints",
        retrieved=retrieved,
    )
    return cell / "retrieved.csv"


def test_fusion_is_exported_like_a_retriever_from_its_sources_items(trained: Trained) -> None:
    fused = lists_of(trained.out / "fusion/retrieved.csv")
    assert sorted(fused) == sorted(SPLITS)
    metrics = read_json(trained.out / "fusion/metrics.json")
    assert set(metrics) == {"val", "test"}
    sources = [lists_of(path) for path in trained.sources.values()]
    for split in SPLITS:
        np.testing.assert_array_equal(fused[split].targets, trained.data.targets(split))
        assert fused[split].items.shape == (trained.data.num_users, 50)
        assert (np.diff(fused[split].scores, axis=1) <= 0).all()  # best first
        for row, items in enumerate(fused[split].items):
            listed = items[items > 0]
            assert len(set(listed.tolist())) == len(listed)  # each item once
            offered = set().union(*(set(source[split].items[row].tolist()) for source in sources))
            assert set(listed.tolist()) <= offered


def test_fused_train_lists_hold_no_val_or_test_item(trained: Trained) -> None:
    data = trained.data
    train = lists_of(trained.out / "fusion/retrieved.csv")["train"]
    later = data.val_and_test_items()[train.users - 1]
    assert not (train.items[:, :, None] == later[:, None, :]).any()
    assert not forbidden_items(data, train).any()
    assert (train.targets[:, None] == train.items).any()  # the lists do hold targets


def test_the_workflow_hands_sources_over_as_named_inputs(trained: Trained) -> None:
    named = {"train": "x", "retrieved_lrurec": "a.csv", "retrieved_bert4rec": "b.csv"}
    assert retrieved_inputs(named) == {"lrurec": Path("a.csv"), "bert4rec": Path("b.csv")}


def test_ltr_is_cross_fitted_on_val_lists_and_stops_early(trained: Trained) -> None:
    history = read_json(trained.out / "ltr/history.json")
    best = [entry["epoch"] for entry in history if entry["best"]][-1]
    assert len(history) < LTR_PARAMS["max_rounds"]  # stopped early ...
    assert len(history) == best + LTR_PARAMS["early_stopping_rounds"]  # ... after patience
    values = [entry["val"]["ndcg@10"] for entry in history]
    assert values[best - 1] == max(values) > values[0]
    assert history[-1]["train_seconds"] > 0


def test_ltr_can_train_on_train_lists_and_stop_on_val_lists(trained: Trained) -> None:
    model = built_ltr(trained, {**LTR_PARAMS, "train_task": "train"})
    fused = lists_of(trained.out / "fusion/retrieved.csv")
    history = model.fit_lists(
        trained.data, fused["train"].head(TOP_K), fused["val"].head(TOP_K), RERANK
    )
    assert len(model.boosters) == 1 and model.user_folds is None
    best = [entry["epoch"] for entry in history if entry["best"]][-1]
    # The val metric it stops on is the reranked val lists' own.
    reranked = rerank(model, trained.data, fused["val"].head(TOP_K))
    assert evaluate(reranked)["ndcg@10"] == pytest.approx(history[best - 1]["val"]["ndcg@10"])


def test_cross_fitted_ltr_scores_val_users_out_of_fold(trained: Trained) -> None:
    model = load_model(trained.out / "ltr/model.pt", trained.data, **inputs_of(trained))
    assert len(model.boosters) == 5
    assert np.bincount(model.user_folds).min() > 0.15 * trained.data.num_users
    val = lists_of(trained.out / "fusion/retrieved.csv")["val"].head(TOP_K)
    scores = model.score_lists(trained.data, val)
    row = 0
    fold = model.user_folds[val.users[row] - 1]
    features = model.list_features.matrix(val.first_users(1))
    np.testing.assert_allclose(scores[row], model.boosters[fold].predict(features))
    # Other lists are scored by the mean of the fold models.
    test = lists_of(trained.out / "fusion/retrieved.csv")["test"].head(TOP_K).first_users(1)
    features = model.list_features.matrix(test)
    mean = np.mean([booster.predict(features) for booster in model.boosters], axis=0)
    np.testing.assert_allclose(model.score_lists(trained.data, test)[0], mean)


def test_no_users_test_item_is_in_the_lists_ltr_learns_from(trained: Trained) -> None:
    val = lists_of(trained.out / "fusion/retrieved.csv")["val"].head(TOP_K)
    builder = ListFeatures(trained.data, inputs_of(trained)["retrieved"], LTR_PARAMS["sources"])
    kept = Queries.of(builder, val)
    learnt = Queries.of(builder, val, drop=trained.data.test[val.users - 1])
    holding = (val.items == trained.data.test[val.users - 1, None])[kept.rows].sum()
    assert holding > 0  # the val lists do hold test items ...
    assert kept.sizes.sum() - learnt.sizes.sum() == holding  # ... none of which is learnt from


def inputs_of(trained: Trained) -> dict:
    dataset = as_dataset_files(trained.data_dir)
    return method_inputs(dataset, trained.data, trained.features, trained.sources)


def test_ltr_refuses_lists_of_the_wrong_tasks(trained: Trained) -> None:
    model = built_ltr(trained)
    fused = lists_of(trained.out / "fusion/retrieved.csv")
    with pytest.raises(ValueError, match="train-task lists"):
        model.fit_lists(trained.data, fused["val"], fused["val"], RERANK)


def built_ltr(trained: Trained, params: dict = LTR_PARAMS):
    inputs = method_inputs(
        as_dataset_files(trained.data_dir), trained.data, trained.features, trained.sources
    )
    return build_model("ltr", trained.data, params, seed=0, **inputs)


def test_ltr_beats_its_input_order_on_the_demo(trained: Trained) -> None:
    cell = trained.out / "ltr"
    metrics = run_rerank(
        as_dataset_files(trained.data_dir),
        cell / "model.pt",
        trained.out / "fusion/retrieved.csv",
        TOP_K,
        reranked_path=cell / "reranked.csv",
        metrics_path=cell / "metrics.json",
        ranks_path=cell / "ranks.csv",
        label="fusion -> ltr",
        features=trained.features,
        retrieved=trained.sources,
    )
    fused = lists_of(trained.out / "fusion/retrieved.csv")
    for split in ("val", "test"):
        before = evaluate(fused[split].head(TOP_K))
        assert metrics[split]["ndcg@10"] > before["ndcg@10"] + 0.02, split
    reranked = lists_of(cell / "reranked.csv")["test"]
    np.testing.assert_array_equal(
        np.sort(reranked.items, axis=1), np.sort(fused["test"].head(TOP_K).items, axis=1)
    )


def test_a_saved_ltr_model_scores_exactly_as_the_trained_one(
    trained: Trained, tmp_path: Path
) -> None:
    dataset = as_dataset_files(trained.data_dir)
    inputs = method_inputs(dataset, trained.data, trained.features, trained.sources)
    model = load_model(trained.out / "ltr/model.pt", trained.data, **inputs)
    test = lists_of(trained.out / "fusion/retrieved.csv")["test"].head(TOP_K)
    scores = model.score_lists(trained.data, test)
    save_model(model, "ltr", LTR_PARAMS, tmp_path / "again.pt")
    saved = torch.load(tmp_path / "again.pt", weights_only=True)  # tensors and plain values
    assert saved["state_dict"]["_extra_state"].dtype == torch.uint8
    again = load_model(tmp_path / "again.pt", trained.data, **inputs)
    np.testing.assert_array_equal(again.score_lists(trained.data, test), scores)
    np.testing.assert_array_equal(
        rerank(again, trained.data, test).items, rerank(model, trained.data, test).items
    )


def test_ltr_fails_clearly_when_scoring_with_other_features(trained: Trained) -> None:
    dataset = as_dataset_files(trained.data_dir)
    inputs = method_inputs(dataset, trained.data, None, trained.sources)  # no image/text
    model = load_model(trained.out / "ltr/model.pt", trained.data, **inputs)
    test = lists_of(trained.out / "fusion/retrieved.csv")["test"].head(TOP_K)
    with pytest.raises(ValueError, match="same sources and item features"):
        model.score_lists(trained.data, test)


def test_feature_importance_is_written_beside_the_model(trained: Trained) -> None:
    importance = pd.read_csv(trained.out / "ltr/feature_importance.csv")
    assert list(importance.columns) == ["feature", "gain", "splits", "gain_share"]
    names = ListFeatures(trained.data, {}, LTR_PARAMS["sources"], load_features(trained)).names
    assert sorted(importance["feature"]) == sorted(names)
    assert "lrurec_rank" in names and "image_similarity_last" in names
    assert importance["gain"].is_monotonic_decreasing
    assert importance["gain_share"].sum() == pytest.approx(1.0)


def load_features(trained: Trained):
    return method_inputs(as_dataset_files(trained.data_dir), trained.data, trained.features)[
        "features"
    ]


# --- the features ------------------------------------------------------------------------------


def test_task_statistics_count_only_that_tasks_inputs(hand_data: SequenceData) -> None:
    """The train task's transitions leave out every train target (3, 7, 4), as the test
    task's leave out the test targets."""
    train = TaskStatistics.of(hand_data.inputs("train"), hand_data.num_items, window=2)
    assert train.transitions.lookup(np.array([2]), np.array([3]))[0] == 0  # 2 -> 3, the target
    assert train.transitions.lookup(np.array([1]), np.array([2]))[0] == 1
    val = TaskStatistics.of(hand_data.inputs("val"), hand_data.num_items, window=2)
    assert val.transitions.lookup(np.array([2]), np.array([3]))[0] == 1
    assert val.cooccurrence.lookup(np.array([3]), np.array([1]))[0] == 1  # two apart, reversed
    assert train.counts[3] == 0 and val.counts[3] == 1
    test = TaskStatistics.of(hand_data.inputs("test"), hand_data.num_items, window=1)
    assert test.transitions.lookup(np.array([4]), np.array([5]))[0] == 0  # into a test target
    assert test.transitions.lookup(np.array([3]), np.array([4]))[0] == 1  # into a val target


def test_source_features_rank_missing_candidates_after_the_list(hand_data: SequenceData) -> None:
    sources = hand_sources(hand_data)
    builder = ListFeatures(hand_data, sources, ["a", "b"])
    candidates = lists("val", [4, 8, 6], [[4, 7], [9, 5], [6, 1]])
    matrix = builder.matrix(candidates).reshape(3, 2, -1)
    names = builder.names
    rank_a, score_b = names.index("a_rank"), names.index("b_score")
    assert matrix[0, :, rank_a].tolist() == [1, 4]  # 7 is not in a's top 3
    assert matrix[0, 0, score_b] == 5 and np.isnan(matrix[0, 1, names.index("a_score")])
    assert matrix[0, :, names.index("sources_listing")].tolist() == [2, 1]
    assert matrix[0, :, names.index("input_rank")].tolist() == [1, 2]
    assert matrix[1, 1, names.index("b_rank")] == 4  # 5 is not in b's list for user 2
