"""The Snakemake workflow through its real command line: the jobs a grid plans, the demo end to
end (run once per session by the ``demo_run`` fixture), rerunning one cell, and a bad raw file.

Dry runs are read from Snakemake's job listing (``rule <name>:`` blocks with a ``wildcards:``
line), which names every wildcard of every job; the DOT of ``--dag`` leaves out the wildcards
whose value is the same for all jobs of a rule, so it cannot tell cells apart reliably.
"""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from seqrerank.data.dataset import load_sequences
from seqrerank.evaluation import evaluate, retrieve
from seqrerank.methods.popularity import Popularity
from seqrerank.metrics import METRIC_COLUMNS

pytestmark = pytest.mark.workflow

REPO = Path(__file__).resolve().parents[1]
BEAUTY = REPO.parent / "shared/data/amazon-beauty/Beauty.txt"
DATA_FILES = ["train.txt", "val.txt", "test.txt", "items.csv", "stats.json"]
COMPARISON_COLUMNS = ["dataset", "retriever", "reranker", "mode", "split", *METRIC_COLUMNS]
DEMO_RETRIEVERS = ["lrurec", "vbpr", "mmgcn", "bm3", "fusion"]
DEMO_RERANKERS = [
    "bert4rec",
    "ltr",
    "qwen",
    "qwen3vl_raw_image",
    "qwen3vl_caption",
    "qwen3vl_semantic_summary",
    "qwen3vl_semantic_summary_small",
    "vip5",
]


def planned_jobs(output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job in Snakemake's job listing."""
    jobs = []
    for block in re.split(r"^(?:local)?rule ", output, flags=re.MULTILINE)[1:]:
        rule, _, body = block.partition(":\n")
        match = re.search(r"^\s+wildcards: (.+)$", body, flags=re.MULTILINE)
        wildcards = dict(p.split("=", 1) for p in match.group(1).split(", ")) if match else {}
        jobs.append((rule, wildcards))
    return jobs


def jobs_of(jobs: list[tuple[str, dict[str, str]]], rule: str, *keys: str) -> Counter:
    """How many jobs of ``rule`` there are per combination of the wildcards ``keys``."""
    return Counter(tuple(w[k] for k in keys) for name, w in jobs if name == rule)


def job_stats(output: str) -> dict[str, int]:
    """The first ``Job stats`` table: jobs per rule, and ``total``."""
    table = output.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return {name: int(count) for name, count in re.findall(r"^(\w+)\s+(\d+)$", table, re.M)}


def dry_run(snakemake_cli, workdir: Path, config: dict[str, Any]) -> list:
    """The jobs of `snakemake -n --forceall` for ``config``, run in ``workdir``."""
    path = write_config(workdir / "config.yaml", config)
    result = snakemake_cli("-n", "--forceall", "--directory", workdir, "--configfile", path)
    assert result.returncode == 0, result.stdout[-3000:]
    return planned_jobs(result.stdout)


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def synthetic(seed: int) -> dict[str, Any]:
    return {"source": "synthetic", "synthetic": {"num_users": 50, "num_items": 40, "seed": seed}}


# --- the planned grid -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_grid(snakemake_cli) -> list:
    """The jobs of `snakemake -n` with the default config/config.yaml (Beauty, three seeds)."""
    result = snakemake_cli("-n", "--forceall")
    assert result.returncode == 0, result.stdout[-3000:]
    return planned_jobs(result.stdout)


SEEDS = ("42", "43", "44")


def test_default_grid_trains_each_retriever_once_per_seed(default_grid: list) -> None:
    trained = jobs_of(default_grid, "train_retriever", "dataset", "retriever", "seed")
    assert trained == {("beauty", r, s): 1 for r in ("popularity", "lrurec") for s in SEEDS}


def test_default_grid_trains_bert4rec_once_per_seed_and_ltr_per_candidate_source(
    default_grid: list,
) -> None:
    trained = jobs_of(default_grid, "train_reranker", "dataset", "reranker", "source", "seed")
    sources = ["sequences"] + ["ground_truth", "popularity", "lrurec"]
    assert trained == {
        ("beauty", reranker, source, s): 1
        for s in SEEDS
        for reranker, source in zip(["bert4rec", "ltr", "ltr", "ltr"], sources, strict=True)
    }


def test_default_grid_reranks_every_cell_once_per_seed(default_grid: list) -> None:
    cells = jobs_of(default_grid, "rerank", "dataset", "reranker", "mode", "retriever", "seed")
    kinds = [("retrieval", "popularity"), ("retrieval", "lrurec"), ("ground_truth", "none")]
    assert cells == {
        ("beauty", reranker, m, r, s): 1
        for reranker in ("bert4rec", "ltr")
        for m, r in kinds
        for s in SEEDS
    }


def test_default_grid_samples_ground_truth_candidates_once_per_seed(default_grid: list) -> None:
    assert jobs_of(default_grid, "ground_truth_candidates", "dataset", "seed") == {
        ("beauty", s): 1 for s in SEEDS
    }


def test_default_grid_prepares_the_data_once_and_aggregates_once(default_grid: list) -> None:
    assert jobs_of(default_grid, "prepare_data", "dataset") == {("beauty",): 1}
    assert jobs_of(default_grid, "download_raw", "filename") == {
        ("ratings_Beauty.csv",): 1,
        ("meta_Beauty.json.gz",): 1,
    }
    assert jobs_of(default_grid, "aggregate") == {(): 1}


def test_grid_of_two_datasets_and_two_seeds_has_one_job_per_cell(
    tmp_path: Path, snakemake_cli
) -> None:
    config = {
        "run": "grid",
        "seeds": [1, 2],
        "datasets": {"a": synthetic(1), "b": synthetic(2)},
        "retrievers": ["popularity", "lrurec"],
        "rerankers": ["bert4rec"],
    }
    jobs = dry_run(snakemake_cli, tmp_path, config)
    pairs = {(d, s) for d in "ab" for s in "12"}
    assert jobs_of(jobs, "prepare_data", "dataset") == {("a",): 1, ("b",): 1}
    assert jobs_of(jobs, "train_retriever", "dataset", "seed", "retriever") == {
        (d, s, r): 1 for d, s in pairs for r in ("popularity", "lrurec")
    }
    # BERT4Rec trains on sequences: one model per dataset and seed, not one per retriever.
    assert jobs_of(jobs, "train_reranker", "dataset", "seed", "source") == {
        (d, s, "sequences"): 1 for d, s in pairs
    }
    assert jobs_of(jobs, "ground_truth_candidates", "dataset", "seed") == {p: 1 for p in pairs}
    assert jobs_of(jobs, "rerank", "dataset", "seed", "mode", "retriever") == {
        (d, s, m, r): 1
        for d, s in pairs
        for m, r in [("retrieval", "popularity"), ("retrieval", "lrurec"), ("ground_truth", "none")]
    }


def test_grid_without_ground_truth_mode_samples_no_ground_truth_candidates(
    tmp_path: Path, snakemake_cli
) -> None:
    config = {
        "run": "grid",
        "datasets": {"a": synthetic(1)},
        "retrievers": ["popularity"],
        "rerankers": ["bert4rec"],
        "modes": ["retrieval"],
    }
    jobs = dry_run(snakemake_cli, tmp_path, config)
    assert jobs_of(jobs, "ground_truth_candidates") == {}
    assert jobs_of(jobs, "rerank", "mode", "retriever") == {("retrieval", "popularity"): 1}


def test_a_config_on_the_command_line_replaces_the_default_one(snakemake_cli) -> None:
    """From the repository root, the demo must not inherit config.yaml's Beauty dataset."""
    result = snakemake_cli("-n", "--forceall", "--configfile", "config/demo.yaml")
    assert result.returncode == 0, result.stdout[-3000:]
    jobs = planned_jobs(result.stdout)
    assert jobs_of(jobs, "prepare_data", "dataset") == {("demo",): 1}
    assert jobs_of(jobs, "download_raw") == {}


def test_demo_grid_includes_the_multimodal_retrievers_in_every_cell(snakemake_cli) -> None:
    result = snakemake_cli("-n", "--forceall", "--configfile", "config/demo.yaml")
    assert result.returncode == 0, result.stdout[-3000:]
    jobs = planned_jobs(result.stdout)
    multimodal = ("vbpr", "mmgcn", "bm3")
    trained = jobs_of(jobs, "train_retriever", "retriever")
    assert all(trained[(method,)] == 1 for method in multimodal)
    cells = jobs_of(jobs, "rerank", "mode", "retriever")
    assert all(cells[("retrieval", method)] == len(DEMO_RERANKERS) for method in multimodal)
    # Each feature is computed once, shared by the three methods.
    assert jobs_of(jobs, "item_features", "dataset", "feature") == {
        ("demo", "image"): 1,
        ("demo", "text"): 1,
    }
    for method in multimodal:
        block = result.stdout.split(f"wildcards: dataset=demo, retriever={method}", 1)[0]
        inputs = block.rsplit("rule train_retriever:", 1)[1]
        assert "results/demo/features/image.pt" in inputs
        assert "results/demo/features/text.pt" in inputs


def test_a_multimodal_retriever_on_a_dataset_without_features_names_the_settings(
    tmp_path: Path, snakemake_cli
) -> None:
    config = {"run": "bare", "datasets": {"a": synthetic(1)}, "retrievers": ["vbpr"]}
    path = write_config(tmp_path / "c.yaml", config)
    result = snakemake_cli("-n", "--directory", tmp_path, "--configfile", path)
    assert result.returncode != 0
    assert "vbpr needs item features and dataset a provides none" in result.stdout
    assert "datasets.a.use_image: true" in result.stdout


def test_sequences_dataset_reads_its_local_file(tmp_path: Path, snakemake_cli) -> None:
    if not BEAUTY.exists():
        pytest.skip(f"{BEAUTY} is not available")
    config = {
        "run": "beauty",
        "datasets": {"beauty": {"source": "sequences", "path": str(BEAUTY)}},
        "retrievers": ["popularity"],
    }
    path = write_config(tmp_path / "c.yaml", config)
    result = snakemake_cli("-n", "--forceall", "--directory", tmp_path, "--configfile", path)
    assert result.returncode == 0, result.stdout[-3000:]
    prepare = result.stdout.split("rule prepare_data:", 1)[1].split("\n\n", 1)[0]
    assert str(BEAUTY) in prepare
    assert jobs_of(planned_jobs(result.stdout), "download_raw") == {}


# --- no future item in a training list ---------------------------------------------------------


def job_inputs(output: str, rule: str) -> list[list[str]]:
    """The input files of every ``rule`` job in Snakemake's job listing."""
    inputs = []
    for block in re.split(r"^(?:local)?rule ", output, flags=re.MULTILINE)[1:]:
        name, _, body = block.partition(":\n")
        match = re.search(r"^\s+input: (.+)$", body, flags=re.MULTILINE)
        if name == rule and match:
            inputs.append(match.group(1).split(", "))
    return inputs


def test_no_list_a_reranker_trains_on_holds_a_val_or_test_item(
    tmp_path: Path, snakemake_cli
) -> None:
    """Every candidate list that a train_reranker job of a small grid reads, from Stage 1's
    train task or the ground-truth sampler, is free of its user's validation and test items."""
    config = {
        "run": "leak",
        "datasets": {"tiny": synthetic(3)},
        "retrievers": ["popularity", "lrurec"],
        "rerankers": ["qwen", "bert4rec"],
        "retrieval": {"epochs": 2, "top_k": 20},
        "rerank": {"top_k": 20, "train_candidates": "retrieval"},
    }
    path = write_config(tmp_path / "config.yaml", config)
    args = ["--directory", tmp_path, "--configfile", path]
    planned = snakemake_cli("-n", "--forceall", *args)
    assert planned.returncode == 0, planned.stdout[-3000:]
    read = {f for files in job_inputs(planned.stdout, "train_reranker") for f in files}
    lists = sorted(f for f in read if f.endswith("retrieved.csv") or "/candidates/" in f)
    assert any("retrieval/lrurec" in f for f in lists) and any("ground_truth" in f for f in lists)
    built = snakemake_cli(*lists, "--cores", "2", *args, timeout=600)
    assert built.returncode == 0, built.stdout[-3000:]
    data = load_sequences(tmp_path / "results/tiny/data")
    later = {u: {int(v), int(t)} for u, v, t in zip(data.users, data.val, data.test, strict=True)}
    for name in lists:
        train = pd.read_csv(tmp_path / name).query("split == 'train'")
        assert len(train) == data.num_users, name
        for user, items in zip(train["user"], train["items"], strict=True):
            assert not later[user] & {int(i) for i in items.split()}, (name, user)


# --- the demo, end to end -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def comparison(demo_run) -> pd.DataFrame:
    return pd.read_csv(demo_run.results / "demo/comparison.csv")


def test_demo_comparison_has_every_cell_for_val_and_test(comparison: pd.DataFrame) -> None:
    cells = [(r, "none", "retrieval") for r in DEMO_RETRIEVERS]
    for reranker in DEMO_RERANKERS:
        cells += [(r, reranker, "retrieval") for r in DEMO_RETRIEVERS]
        cells.append(("none", reranker, "ground_truth"))
    expected = sorted(("demo", *cell, split) for cell in cells for split in ("val", "test"))
    rows = comparison[["dataset", "retriever", "reranker", "mode", "split"]]
    assert sorted(rows.itertuples(index=False, name=None)) == expected


def test_demo_comparison_columns(comparison: pd.DataFrame) -> None:
    assert list(comparison.columns) == [
        *COMPARISON_COLUMNS,
        *(f"{metric}_std" for metric in METRIC_COLUMNS),
        "seeds",
        "p_ndcg@10_vs_stage1",
        "p_ndcg@10_vs_best",
        "ndcg@10_sig",
        "base_model",
        "text_model",
        "random_weights",
    ]
    assert (comparison["seeds"] == 1).all()
    assert comparison[[f"{m}_std" for m in METRIC_COLUMNS]].isna().all().all()  # one seed
    assert comparison[list(METRIC_COLUMNS)].notna().all().all()


def test_demo_lrurec_retrieves_better_than_popularity(demo_run, comparison) -> None:
    """Popularity is not in the demo grid (config/demo.yaml), so the baseline is scored here on
    the demo's prepared data."""
    data_dir = demo_run.results / "demo/data"
    data = load_sequences(data_dir)
    baseline = Popularity.from_data(data)
    popularity = evaluate(retrieve(baseline, data, "val", top_k=100))["ndcg@10"]
    lrurec = comparison.query("split == 'val' and retriever == 'lrurec' and reranker == 'none'")
    assert lrurec["ndcg@10"].item() > popularity


def test_demo_ground_truth_lists_always_hold_the_target(comparison: pd.DataFrame) -> None:
    ground_truth = comparison[comparison["mode"] == "ground_truth"]
    assert (ground_truth["hit@20"] == 1.0).all()  # 20 candidates, the target among them


def test_demo_comparison_markdown_has_a_row_per_cell(demo_run, comparison) -> None:
    lines = (demo_run.results / "demo/comparison.md").read_text().splitlines()
    header = [*COMPARISON_COLUMNS, "seeds", "p_ndcg@10_vs_stage1", "p_ndcg@10_vs_best"]
    assert lines[0] == "| " + " | ".join(header) + " |"
    table_rows = [line for line in lines[2:] if line.startswith("| ")]
    assert len(table_rows) == len(comparison)
    assert any("† ndcg@10 differs from the Stage 1 row" in line for line in lines)
    assert lines[-1].startswith("‡ random-weight base model")  # the demo's tiny checkpoints


def test_demo_trains_bert4rec_once_for_all_cells(demo_run) -> None:
    models = sorted(
        p.name for p in (demo_run.results / "demo/rerank/bert4rec").glob("trained_on_*")
    )
    assert models == ["trained_on_sequences"]


@pytest.mark.parametrize("reranker", DEMO_RERANKERS[1:])
def test_demo_trains_each_candidate_reranker_once(demo_run, reranker) -> None:
    """The demo trains candidate-list rerankers on the ground-truth lists alone
    (rerank.train_candidates: ground_truth): one model serves every cell."""
    root = demo_run.results / "demo/rerank" / reranker
    assert sorted(p.name for p in root.glob("trained_on_*")) == ["trained_on_ground_truth"]
    history = json.loads((root / "trained_on_ground_truth/seed42/history.json").read_text())
    epochs = [epoch["epoch"] for epoch in history]
    # The LLM rerankers and VIP5 train one epoch; ltr's entries are its boosting rounds.
    assert epochs == (list(range(1, len(epochs) + 1)) if reranker == "ltr" else [1])
    assert 0 < history[0]["val"]["ndcg@10"] <= 1


def test_rerankers_trained_on_retrieved_candidates_get_a_model_per_source(snakemake_cli) -> None:
    result = snakemake_cli(
        "-n", "--forceall", "--configfile", "config/demo.yaml",
        "--config", "rerank={'train_candidates': 'retrieval'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:]
    trained = jobs_of(planned_jobs(result.stdout), "train_reranker", "reranker", "source")
    assert trained[("bert4rec", "sequences")] == 1
    for reranker in DEMO_RERANKERS[1:]:
        sources = {source for (name, source) in trained if name == reranker}
        assert sources == {"ground_truth", *DEMO_RETRIEVERS}, reranker


def test_demo_llm_rerankers_score_every_val_and_test_user(demo_run) -> None:
    users = len((demo_run.results / "demo/data/train.txt").read_text().splitlines())
    for reranker in DEMO_RERANKERS[1:]:
        cell = demo_run.results / f"demo/rerank/{reranker}/retrieval/lrurec/seed42"
        ranks = pd.read_csv(cell / "ranks.csv")
        assert ranks.groupby("split").size().to_dict() == {"test": users, "val": users}
        metrics = json.loads((cell / "metrics.json").read_text())
        assert metrics["val"]["users"] == users


def test_demo_item_texts_cover_every_item_with_an_image(demo_run) -> None:
    data = demo_run.results / "demo/data"
    items = pd.read_csv(data / "items.csv", keep_default_na=False)
    with_image = set(items.loc[items["image"] != "", "item_id"])
    for name, column in [
        ("captions.csv", "caption"),
        ("semantic_summaries.csv", "semantic_summary"),
        ("semantic_summaries_small.csv", "semantic_summary_small"),
    ]:
        table = pd.read_csv(data / name)
        assert set(table["item_id"]) == with_image
        assert list(table.columns) == ["item_id", column]


def test_rerunning_one_cell_by_its_output_file_reruns_only_that_job(
    demo_run, snakemake_cli
) -> None:
    cell = demo_run.results / "demo/rerank/bert4rec/retrieval/vbpr/seed42"
    model = demo_run.results / "demo/rerank/bert4rec/trained_on_sequences/seed42/model.pt"
    other_cell = demo_run.results / "demo/rerank/bert4rec/retrieval/lrurec/seed42/metrics.json"
    before = json.loads((cell / "metrics.json").read_text())
    untouched = {path: path.stat().st_mtime_ns for path in (model, other_cell)}
    (cell / "metrics.json").unlink()

    target = (cell / "metrics.json").relative_to(demo_run.workdir)
    result = snakemake_cli(
        "--configfile", "config/demo.yaml", "--cores", "1", "--directory", demo_run.workdir, target
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert job_stats(result.stdout) == {"rerank": 1, "total": 1}
    assert json.loads((cell / "metrics.json").read_text()) == before
    assert {path: path.stat().st_mtime_ns for path in untouched} == untouched


# --- a malformed raw file -----------------------------------------------------------------------


def test_malformed_ratings_file_fails_with_its_line_in_the_rule_log(
    tmp_path: Path, snakemake_cli
) -> None:
    ratings, meta = tmp_path / "ratings_Bad.csv", tmp_path / "meta_Bad.json.gz"
    ratings.write_text("A1,B1,5.0,100\nA1,B2,4.0,101\nA1,B3,5.0\nA2,B1,4.0,102\n")
    with gzip.open(meta, "wt") as f:
        f.writelines(repr({"asin": f"B{i}", "title": f"Item {i}"}) + "\n" for i in (1, 2, 3))
    config = {
        "run": "bad",
        "datasets": {
            "broken": {
                "source": "amazon",
                "category": "Bad",
                "ratings": str(ratings),
                "meta": str(meta),
            }
        },
        "retrievers": ["popularity"],
    }
    workdir = tmp_path / "work"
    workdir.mkdir()
    path = write_config(tmp_path / "bad.yaml", config)
    result = snakemake_cli("--configfile", path, "--cores", "1", "--directory", workdir)

    assert result.returncode != 0
    assert "Error in rule prepare_data" in result.stdout
    assert "results/broken/logs/prepare_data.log" in result.stdout
    log = (workdir / "results/broken/logs/prepare_data.log").read_text()
    assert f"{ratings}:3: expected 4 comma-separated fields" in log
    assert "got 3" in log
    data_dir = workdir / "results/broken/data"
    assert not any((data_dir / name).exists() for name in DATA_FILES)
    assert not data_dir.exists() or not any(data_dir.iterdir())  # no half-written files either
