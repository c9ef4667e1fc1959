"""The grid of a configuration (seqrerank.grid), without Snakemake: its cells, the model each
cell's ranking comes from, the files jobs read, and what jobs ask of a cluster."""

from __future__ import annotations

import subprocess
import sys
from copy import deepcopy

import pytest
import yaml
from conftest import REPO

from seqrerank.config import validate_config
from seqrerank.grid import Cell, Grid

SCHEMA = REPO / "config/schema.yaml"


def grid(**changes) -> Grid:
    config = {
        "run": "grid",
        "datasets": {"a": {"source": "synthetic"}},
        "retrievers": ["popularity", "lrurec"],
        "rerankers": ["bert4rec", "qwen"],
        **deepcopy(changes),
    }
    return Grid(validate_config(config, SCHEMA))


def test_cells_are_every_retriever_and_every_reranker_in_both_modes() -> None:
    cells = grid(seeds=[1, 2]).cells()
    assert len(cells) == 2 * (2 + 2 * (2 + 1))
    assert Cell("a", "lrurec", "none", "retrieval", 1) in cells
    assert Cell("a", "none", "qwen", "ground_truth", 2) in cells
    assert Cell("a", "lrurec", "qwen", "retrieval", 2).metrics == (
        "results/a/rerank/qwen/retrieval/lrurec/seed2/metrics.json"
    )
    assert Cell("a", "lrurec", "none", "retrieval", 1).ranks == (
        "results/a/retrieval/lrurec/seed1/ranks.csv"
    )


def test_a_candidate_reranker_trains_per_source_and_bert4rec_once() -> None:
    g = grid()
    models = {(m.method, m.source) for m in g.trained_models()}
    assert models == {
        ("lrurec", None),
        ("bert4rec", "sequences"),
        ("qwen", "popularity"),
        ("qwen", "lrurec"),
        ("qwen", "ground_truth"),
    }
    one_model = grid(rerank={"train_candidates": "ground_truth"})
    assert {m.source for m in one_model.trained_models() if m.method == "qwen"} == {"ground_truth"}


def test_a_sequence_reranker_that_is_also_a_retriever_is_trained_once_as_the_retriever() -> None:
    g = grid(retrievers=["lrurec", "bert4rec"], rerankers=["bert4rec"])
    model = g.cell_model("a", "bert4rec", "retrieval", "lrurec", 42)
    assert model == "results/a/retrieval/bert4rec/seed42/model.pt"
    assert [(m.method, m.stage) for m in g.trained_models()] == [
        ("lrurec", "retrieval"),
        ("bert4rec", "retrieval"),
    ]


def test_fusion_and_ltr_read_their_sources_lists_of_the_same_seed() -> None:
    g = grid(
        retrievers=["popularity", "lrurec", "fusion"],
        rerankers=["ltr"],
        methods={
            "fusion": {"model": {"sources": ["lrurec", "popularity"]}},
            "ltr": {"model": {"sources": ["lrurec"]}},
        },
    )
    assert g.method_inputs("a", "fusion", 43) == {
        "retrieved_lrurec": "results/a/retrieval/lrurec/seed43/retrieved.csv",
        "retrieved_popularity": "results/a/retrieval/popularity/seed43/retrieved.csv",
    }
    # ltr reads item features where the dataset has them; this one has none.
    inputs = g.reranker_training_inputs("a", "ltr", "fusion", 44)
    assert inputs["retrieved_lrurec"] == "results/a/retrieval/lrurec/seed44/retrieved.csv"
    assert inputs["training_candidates"] == "results/a/retrieval/fusion/seed44/retrieved.csv"
    assert not any(key.endswith("_features") for key in inputs)
    # VBPR needs features, and says where to enable them.
    with pytest.raises(ValueError, match="vbpr needs item features"):
        grid(retrievers=["vbpr"]).method_inputs("a", "vbpr", 42)


@pytest.mark.parametrize("sources", [["bm3"], ["fusion"]])
def test_a_source_that_is_not_another_retriever_of_the_grid_is_an_error(sources) -> None:
    g = grid(retrievers=["lrurec", "fusion"], methods={"fusion": {"model": {"sources": sources}}})
    with pytest.raises(ValueError, match="add them to retrievers"):
        g.method_inputs("a", "fusion", 42)


def test_a_cell_of_the_wrong_mode_for_its_retriever_is_an_error() -> None:
    with pytest.raises(ValueError, match="ground_truth cells do not depend on a retriever"):
        grid().cell_model("a", "qwen", "ground_truth", "lrurec", 42)


def test_method_resources_override_the_rules() -> None:
    g = grid(
        resources={"train_reranker": {"gpu": 1, "mem_mb": 32000, "threads": 8}},
        methods={"bert4rec": {"resources": {"mem_mb": 8000, "threads": 2}}},
    )
    assert g.resources("train_reranker", "qwen") == {"mem_mb": 32000, "runtime": 60, "gpu": 1}
    assert g.resources("train_reranker", "bert4rec") == {"mem_mb": 8000, "runtime": 60, "gpu": 1}
    assert (g.threads("train_reranker", "qwen"), g.threads("train_reranker", "bert4rec")) == (8, 2)
    assert g.resources("prepare_data", mem_mb=4000) == {"mem_mb": 4000, "runtime": 60, "gpu": 0}


def test_a_job_on_several_nodes_asks_one_task_per_node_and_its_gpus_per_node() -> None:
    g = grid(resources={"train_reranker": {"gpu": 4, "nodes": 2, "gpu_model": "a100"}})
    assert g.resources("train_reranker", "qwen") == {
        "mem_mb": 2000,
        "runtime": 60,
        "nodes": 2,
        "tasks": 2,
        "tasks_per_gpu": 0,
        "mpi": "srun",
        "gres": "gpu:a100:4",
    }
    assert g.processes("train_reranker", "qwen") == {"per_node": 4, "nodes": 2}


def test_several_gpus_only_where_a_job_can_use_them() -> None:
    with pytest.raises(ValueError, match="train_retriever runs on one GPU of one node"):
        grid(resources={"train_retriever": {"gpu": 2}}).resources("train_retriever", "lrurec")
    with pytest.raises(ValueError, match="nodes > 1 needs gpu"):
        grid(resources={"rerank": {"nodes": 2}}).resources("rerank", "qwen")


def test_vllm_runs_in_one_process() -> None:
    g = grid(resources={"rerank": {"gpu": 4}}, methods={"qwen": {"model": {"backend": "vllm"}}})
    assert g.processes("rerank", "qwen") == {"per_node": 1, "nodes": 1}


def test_the_full_grid_gives_the_model_rules_a_gpu_and_popularity_none() -> None:
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    g = Grid(validate_config(config, SCHEMA))
    for rule in ("train_reranker", "rerank", "item_features", "caption_items", "summarise_items"):
        assert g.resources(rule, None)["gpu"] == 1, rule
    assert g.resources("train_retriever", "lrurec")["gpu"] == 1
    assert g.resources("train_retriever", "popularity")["gpu"] == 0
    assert g.resources("prepare_data")["gpu"] == 0


def test_the_grid_imports_neither_torch_nor_snakemake() -> None:
    """Every SLURM job parses the workflow, and with it this module."""
    heavy = "{'torch', 'snakemake', 'pandas'}"
    code = f"import sys, seqrerank.grid; print(sorted({heavy} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_apptainer_jobs_bind_the_data_folders_and_the_model_cache(tmp_path) -> None:
    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir(), cache.mkdir()
    (data / "Beauty.txt").write_text("1 1 2 3\n")
    g = grid(
        datasets={"b": {"source": "sequences", "path": str(data / "Beauty.txt")}},
        model_cache=str(cache),
    )
    assert g.bind_paths() == sorted([str(data), str(cache)])
