"""The comparison table: means and spread over seeds, and significance marks that survive the
table's multiple comparisons."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from seqrerank import comparison
from seqrerank.comparison import RANDOM_WEIGHTS_FOOTNOTE, comparison_table, to_markdown
from seqrerank.config import load_config
from seqrerank.io import write_json
from seqrerank.metrics import metrics_from_ranks
from seqrerank.report.base_models import base_models
from seqrerank.significance import paired_randomization_test

USERS = 300
REPO = Path(__file__).resolve().parents[1]
TINY_PREFIX = "results/models/tiny-"  # where the workflow's tiny_model rule writes


def write_cell(folder: Path, ranks: dict[str, np.ndarray]) -> Path:
    """A cell's metrics.json and ranks.csv from each split's per-user target ranks."""
    folder.mkdir(parents=True)
    write_json(folder / "metrics.json", {s: metrics_from_ranks(r) for s, r in ranks.items()})
    users = np.arange(1, USERS + 1)
    frame = pd.concat(
        pd.DataFrame({"split": split, "user": users, "rank": r}) for split, r in ranks.items()
    )
    frame.to_csv(folder / "ranks.csv", index=False)
    return folder / "metrics.json"


def grid(
    tmp_path: Path,
    systems: dict[tuple[str, str], float],
    seeds=(1, 2, 3),
    base_models: dict | None = None,
) -> pd.DataFrame:
    """Retrieval-mode cells of one dataset; each system's target is at rank 1 for a share of
    the users (its quality) and absent otherwise, drawn per seed."""
    cells, paths = [], []
    for seed in seeds:
        for (retriever, reranker), quality in systems.items():
            rng = np.random.default_rng([seed, len(cells)])
            ranks = {s: np.where(rng.random(USERS) < quality, 1, 0) for s in ("val", "test")}
            cell = dict(dataset="d", retriever=retriever, reranker=reranker, mode="retrieval")
            paths.append(write_cell(tmp_path / f"{retriever}-{reranker}-{seed}", ranks))
            cells.append({**cell, "seed": seed})
    return comparison_table(cells, paths, base_models)


def row(table: pd.DataFrame, retriever: str, reranker: str, split: str = "test") -> pd.Series:
    chosen = table.query("retriever == @retriever and reranker == @reranker and split == @split")
    return chosen.iloc[0]


def test_metrics_are_means_over_seeds_with_their_sample_std(tmp_path: Path) -> None:
    table = grid(tmp_path, {("lrurec", "none"): 0.3})
    per_seed = [
        pd.read_csv(tmp_path / f"lrurec-none-{seed}/ranks.csv").query("split == 'test'")
        for seed in (1, 2, 3)
    ]
    hits = [(part["rank"] == 1).mean() for part in per_seed]
    stage1 = row(table, "lrurec", "none")
    assert stage1["seeds"] == 3
    assert stage1["ndcg@10"] == pytest.approx(np.mean(hits))
    assert stage1["ndcg@10_std"] == pytest.approx(np.std(hits, ddof=1))
    assert stage1["ndcg@10_std"] > 0


def test_one_seed_has_no_std(tmp_path: Path) -> None:
    table = grid(tmp_path, {("lrurec", "none"): 0.3}, seeds=(1,))
    assert table["recall@10_std"].isna().all()
    table_lines = [line for line in to_markdown(table).splitlines() if line.startswith("|")]
    assert not any("±" in line for line in table_lines)


def test_a_clearly_better_reranker_is_marked_against_stage1_and_as_the_best(
    tmp_path: Path,
) -> None:
    table = grid(tmp_path, {("lrurec", "none"): 0.2, ("lrurec", "ltr"): 0.5})
    better = row(table, "lrurec", "ltr")
    assert better["p_ndcg@10_vs_stage1"] < 0.001
    assert better["ndcg@10_sig"] == "†*"
    assert pd.isna(better["p_ndcg@10_vs_best"])  # it is the best row itself
    stage1 = row(table, "lrurec", "none")
    assert stage1["p_ndcg@10_vs_best"] < 0.001 and stage1["ndcg@10_sig"] == ""


def test_p_values_are_holm_corrected_over_the_whole_table(tmp_path: Path) -> None:
    systems = {("lrurec", "none"): 0.30, ("lrurec", "a"): 0.36, ("lrurec", "b"): 0.30}
    table = grid(tmp_path, systems, seeds=(1,))
    raw = {}
    for reranker in ("a", "b"):
        ranks = {
            name: pd.read_csv(tmp_path / f"lrurec-{name}-1/ranks.csv").query("split == 'test'")
            for name in (reranker, "none")
        }
        raw[reranker] = paired_randomization_test(
            (ranks[reranker]["rank"] == 1).to_numpy(), (ranks["none"]["rank"] == 1).to_numpy()
        )
    table_p = {r: row(table, "lrurec", r)["p_ndcg@10_vs_stage1"] for r in ("a", "b")}
    tests = table[["p_ndcg@10_vs_stage1", "p_ndcg@10_vs_best"]].notna().sum().sum()
    assert tests == 2 * 2 + 2 * 2  # per split: two rerankers vs Stage 1, two rows vs the best
    for reranker in ("a", "b"):
        assert table_p[reranker] >= raw[reranker]
        assert table_p[reranker] <= min(1.0, tests * raw[reranker])
    assert table_p["a"] > raw["a"]  # the correction changed the smallest one


def test_markdown_shows_mean_plus_minus_std_and_the_marks(tmp_path: Path) -> None:
    table = grid(tmp_path, {("lrurec", "none"): 0.2, ("lrurec", "ltr"): 0.5})
    markdown = to_markdown(table)
    better = row(table, "lrurec", "ltr")
    expected = f"**{better['ndcg@10']:.4f}†*** ± {better['ndcg@10_std']:.4f}"
    assert expected in markdown
    assert "Holm-corrected" in markdown


# ---- which models a row rests on --------------------------------------------------------------


def test_rows_name_their_base_models_and_mark_random_weight_ones(tmp_path: Path) -> None:
    models = {
        "qwen": {"base_model": "results/models/tiny-qwen3", "random_weights": True},
        "caption": {
            "base_model": "Qwen/Qwen3-VL-8B-Instruct",
            "text_model": "Salesforce/blip2-opt-2.7b",
            "random_weights": False,
        },
    }
    systems = {("lrurec", "none"): 0.3, ("lrurec", "qwen"): 0.1, ("lrurec", "caption"): 0.3}
    table = grid(tmp_path, systems, seeds=(1,), base_models=models)
    stage1, qwen, caption = (row(table, "lrurec", r) for r in ("none", "qwen", "caption"))
    assert (stage1["base_model"], stage1["text_model"], stage1["random_weights"]) == ("", "", False)
    assert (qwen["base_model"], qwen["random_weights"]) == ("results/models/tiny-qwen3", True)
    assert caption["text_model"] == "Salesforce/blip2-opt-2.7b" and not caption["random_weights"]
    markdown = to_markdown(table)
    assert "| lrurec | qwen‡ | retrieval |" in markdown
    assert "| lrurec | caption | retrieval |" in markdown
    assert "| lrurec | none | retrieval |" in markdown
    assert RANDOM_WEIGHTS_FOOTNOTE in markdown


def test_a_table_without_random_weight_rows_has_no_mark(tmp_path: Path) -> None:
    table = grid(tmp_path, {("lrurec", "none"): 0.3, ("lrurec", "b"): 0.3}, seeds=(1,))
    assert not table["random_weights"].any() and (table["base_model"] == "").all()
    assert "‡" not in to_markdown(table)


def test_the_demo_marks_its_tiny_models_and_names_the_captioner_and_summariser() -> None:
    models = base_models(load_config(REPO / "config/demo.yaml"), TINY_PREFIX)
    assert models["lrurec"] == {"base_model": "", "text_model": "", "random_weights": False}
    assert models["bert4rec"]["random_weights"] is False
    assert models["qwen"] == {
        "base_model": "results/models/tiny-qwen3",
        "text_model": "",
        "random_weights": True,
    }
    assert models["qwen3vl_caption"]["text_model"] == "results/models/tiny-blip2"
    assert models["qwen3vl_semantic_summary_small"]["text_model"] == "results/models/tiny-qwen3vl"
    assert models["vip5"]["base_model"] == "results/models/tiny-t5"
    random = [method for method, model in models.items() if model["random_weights"]]
    assert sorted(random) == sorted(
        ["qwen", *(f"qwen3vl_{mode}" for mode in ("raw_image", "caption")), "vip5"]
        + ["qwen3vl_semantic_summary", "qwen3vl_semantic_summary_small"]
    )


def test_a_real_run_names_hub_models_and_a_missing_model_name_its_default() -> None:
    config = load_config(REPO / "config/config.yaml")
    config["rerankers"] = ["qwen", "qwen3vl_caption", "qwen3vl_semantic_summary_small", "vip5"]
    del config["methods"]["qwen"]["model"]["model_name"]
    models = base_models(config, TINY_PREFIX)
    assert models["qwen"]["base_model"] == "Qwen/Qwen2.5-1.5B-Instruct"  # the class default
    assert models["qwen3vl_caption"] == {
        "base_model": "Qwen/Qwen3-VL-8B-Instruct",
        "text_model": "Salesforce/blip2-opt-2.7b",
        "random_weights": False,
    }
    assert models["qwen3vl_semantic_summary_small"]["text_model"] == "Qwen/Qwen3-VL-2B-Instruct"
    assert models["vip5"]["base_model"] == "t5-small"
    assert not any(model["random_weights"] for model in models.values())
    # A random-weight captioner marks a row whose reranker has real weights.
    config["captions"]["model_name"] = "results/models/tiny-blip2"
    assert base_models(config, TINY_PREFIX)["qwen3vl_caption"]["random_weights"] is True


def test_a_table_of_many_tests_draws_enough_permutations_to_pass_holm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With 10,000 permutations the smallest p-value is 1/10,001: Holm over 600 tests could
    leave nothing significant. The permutations grow with the number of tests, so the smallest
    attainable corrected p-value stays below alpha / 2."""
    drawn = []

    def smallest_p_value(a, b, permutations):
        drawn.append(permutations)
        return 1 / (permutations + 1)

    monkeypatch.setattr(comparison, "paired_randomization_test", smallest_p_value)
    systems = {("lrurec", "none"): 0.2} | {("lrurec", f"r{i}"): 0.6 for i in range(150)}
    table = grid(tmp_path, systems, seeds=(1,))
    tests = len(drawn)
    assert tests == 2 * 150 + 2 * 150  # per split: each reranker vs Stage 1, each row vs the best
    assert set(drawn) == {math.ceil(2 * tests / 0.05)}
    assert table["p_ndcg@10_vs_stage1"].max() < 0.05 / 2
