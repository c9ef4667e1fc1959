"""LLM cells on several processes (seqrerank.distributed): two CPU processes with the gloo backend,
started by torchrun's own launcher, train a tiny Qwen data-parallel and score the demo candidates
sharded over the users; both equal the single-process run. Then the SLURM side: a dry run of the
SLURM profile shows the multi-GPU resources of the LLM rules, and the executor turns them into the
sbatch options a torchrun job needs."""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, build, run_snakemake, tiny_model
from snakemake_executor_plugin_slurm.partitions import get_best_partition, read_partition_file
from snakemake_executor_plugin_slurm.submit_string import get_submit_command
from snakemake_executor_plugin_slurm.utils import set_gres_string
from test_slurm import slurm_test_profile

from seqrerank import distributed, pipeline
from seqrerank.candidates import (
    RankedLists,
    read_ranked_lists,
    sample_ground_truth,
    write_ranked_lists,
)
from seqrerank.data.dataset import SPLITS, DatasetFiles, SequenceData
from seqrerank.evaluation import evaluate, rerank
from seqrerank.pipeline import RerankCandidates, run_rerank, run_reranker_training
from seqrerank.training import TrainSettings

USERS = 40  # of the demo's, with 10 ground-truth candidates each: a test-sized cell
TOP_K = 10
# No LoRA dropout: one process and two draw different dropout masks for the same example.
PARAMS = {
    "model_name": tiny_model("qwen3"),
    "max_history": 5,
    "max_item_tokens": 8,
    "score_batch_size": 4,
    "train_users_per_epoch": 16,
    "lora_dropout": 0.0,
}
# 16 users in batches of 5: parts of 2 and 3 examples, and a last batch of 1 that leaves rank 0
# without an example.
SETTINGS = TrainSettings(epochs=2, lr=1e-3, batch_size=5, patience=2, seed=3)


pytestmark = pytest.mark.usefixtures("tiny_models")


class Interrupted(Exception):
    """Stands for the job being killed in its second epoch."""


def train_then_rerank(training: dict, scoring: dict, threads: int) -> None:
    """Both steps of an LLM cell in one launch, to start the workers once."""
    run_reranker_training(**training, threads=threads)
    distributed.barrier()  # rank 0 has written the model
    run_rerank(**scoring, threads=threads)


def cell(demo_dir: Path, candidates: Path, out: Path) -> tuple[dict, dict]:
    """The keyword arguments of the cell's training and scoring steps, writing under ``out``."""
    training = dict(
        method="qwen",
        dataset=DatasetFiles.in_folder(demo_dir),
        params=PARAMS,
        settings=SETTINGS,
        model_path=out / "model.pt",
        history_path=out / "history.json",
        checkpoint_dir=out / "checkpoints",
        candidates=RerankCandidates(candidates, candidates, TOP_K),
    )
    scoring = dict(
        dataset=DatasetFiles.in_folder(demo_dir),
        model_path=out / "model.pt",
        candidates_path=candidates,
        top_k=TOP_K,
        reranked_path=out / "reranked.csv",
        metrics_path=out / "metrics.json",
        ranks_path=out / "ranks.csv",
        label="qwen (test)",
    )
    return training, scoring


@pytest.fixture(scope="module")
def runs(demo_data: SequenceData, demo_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """(one process, two processes): the output folders of the cell run both ways.

    One process trains the first epoch and is interrupted in the second; the two processes
    resume from a copy of its checkpoint and train the second epoch under DDP, while the one
    process resumes too. Both then score: the two processes with their model, the one process
    with that same model, so that the scores can be compared exactly."""
    root = tmp_path_factory.mktemp("distributed")
    candidates = root / "candidates.csv"
    lists = [sample_ground_truth(demo_data, split, TOP_K - 1, seed=1) for split in SPLITS]
    head = [
        RankedLists(p.split, p.users[:USERS], p.targets[:USERS], p.items[:USERS], p.scores[:USERS])
        for p in lists
    ]
    write_ranked_lists(candidates, head)
    one, two = root / "one", root / "two"
    training, _ = cell(demo_dir, candidates, one)

    validations = itertools.count()

    def evaluate_until_killed(lists: RankedLists) -> dict:
        if next(validations) == 1:
            raise Interrupted
        return evaluate(lists)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipeline, "evaluate", evaluate_until_killed)
        with pytest.raises(Interrupted):
            run_reranker_training(**training, threads=1)
    shutil.copytree(one / "checkpoints", two / "checkpoints")
    run_reranker_training(**training, threads=1)

    log = two / "job.log"
    training, scoring = cell(demo_dir, candidates, two)
    try:
        distributed.launch(
            train_then_rerank,
            distributed.Processes(per_node=2),
            log_path=log,
            threads=2,
            training=training,
            scoring=scoring,
        )
    except RuntimeError as error:
        pytest.fail(f"{error}:\n{log.read_text()[-5000:]}")
    _, scoring = cell(demo_dir, candidates, one)
    run_rerank(**{**scoring, "model_path": two / "model.pt"}, threads=1)
    return one, two


def test_two_processes_resume_and_train_like_one(runs) -> None:
    one, two = runs
    assert "resuming from" in (two / "job.log").read_text()
    single, double = (torch.load(run / "model.pt", weights_only=False) for run in runs)
    assert single["state_dict"].keys() == double["state_dict"].keys()
    for name, value in single["state_dict"].items():
        torch.testing.assert_close(double["state_dict"][name], value, rtol=1e-5, atol=1e-6)
    lora_b = [value for name, value in double["state_dict"].items() if "lora_B" in name]
    assert all(value.abs().sum() > 0 for value in lora_b)  # trained: LoRA's B starts at zero
    histories = [json.loads((run / "history.json").read_text()) for run in runs]
    assert [epoch["epoch"] for epoch in histories[1]] == [1, 2]
    for epoch_one, epoch_two in zip(*histories, strict=True):
        assert epoch_two["loss"] == pytest.approx(epoch_one["loss"], rel=1e-5)
        assert epoch_two["val"] == pytest.approx(epoch_one["val"], rel=1e-5)


def test_scores_gathered_from_two_processes_equal_one_process_scores(runs) -> None:
    one, two = runs
    lists = [read_ranked_lists(run / "reranked.csv") for run in runs]
    assert list(lists[1]) == ["val", "test"]
    for split in ("val", "test"):
        single, double = lists[0][split], lists[1][split]
        assert len(double) == USERS
        np.testing.assert_array_equal(double.users, single.users)  # in user order
        np.testing.assert_array_equal(double.items, single.items)
        np.testing.assert_allclose(double.scores, single.scores, rtol=1e-6)
    pd.testing.assert_frame_equal(pd.read_csv(two / "ranks.csv"), pd.read_csv(one / "ranks.csv"))
    metrics = [json.loads((run / "metrics.json").read_text()) for run in runs]
    assert metrics[1] == metrics[0]


def test_tensor_parallel_size_needs_the_vllm_backend(
    demo_data: SequenceData, demo_dir: Path
) -> None:
    with pytest.raises(ValueError, match="tensor_parallel_size is vLLM's"):
        build("qwen", demo_data, demo_dir, {**PARAMS, "tensor_parallel_size": 2}, 0)


@pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None or torch.cuda.device_count() < 2,
    reason="needs vLLM and two GPUs",
)
def test_vllm_on_two_gpus_ranks_like_transformers(demo_data: SequenceData, demo_dir: Path):
    lists = sample_ground_truth(demo_data, "val", TOP_K - 1, seed=5)
    ranked = {}
    for backend, gpus in (("transformers", 1), ("vllm", 2)):
        params = {**PARAMS, "backend": backend, "tensor_parallel_size": gpus}
        model = build("qwen", demo_data, demo_dir, params, seed=0)
        ranked[backend] = rerank(model, demo_data, lists).items
    np.testing.assert_array_equal(ranked["transformers"], ranked["vllm"])


# ---- SLURM ------------------------------------------------------------------------------------

MULTI_GPU = {
    "train_reranker": {"threads": 8, "mem_mb": 64000, "gpu": 4, "nodes": 2, "gpu_model": "a100"},
    "rerank": {"threads": 8, "mem_mb": 32000, "gpu": 2, "gpu_model": "a100"},
}
# The user's partitions, in the SLURM executor's partition file: the executor picks a job's.
PARTITIONS = {"partitions": {"cpu": {}, "gpu": {"max_gpu": 8, "available_gpu_models": ["a100"]}}}


def dry_run_config(resources: dict) -> dict:
    return {
        "run": "multi-gpu",
        "datasets": {"a": {"source": "synthetic", "synthetic": {"num_users": 50, "seed": 1}}},
        "retrievers": ["popularity"],
        "rerankers": ["qwen"],
        "modes": ["ground_truth"],
        "resources": resources,
    }


def slurm_dry_run(root: Path, config: dict | Path) -> str:
    """`snakemake -n` through profiles/slurm (without conda/Apptainer, which do not install
    here), with the account the user gives on the command line."""
    if isinstance(config, dict):
        (root / "config.yaml").write_text(yaml.safe_dump(config))
        config = root / "config.yaml"
    profile = slurm_test_profile(root / "profile")
    result = run_snakemake(
        "-n", "--forceall", "--profile", profile, "--configfile", config, "--directory", root,
        "--default-resources", "slurm_account=lab",
    )  # fmt: skip
    return result.stdout if result.returncode == 0 else pytest.fail(result.stdout[-3000:])


def listed_jobs(output: str) -> list[tuple[str, str, dict]]:
    """(rule, wildcards, resources) of every job in a dry run, as Snakemake lists them."""
    jobs = []
    for block in re.split(r"^(?:local)?rule ", output, flags=re.MULTILINE)[1:]:
        rule = block.split(":", 1)[0]
        line = re.search(r"^\s+resources: (.+)$", block, flags=re.MULTILINE).group(1)
        pairs = (pair.split("=", 1) for pair in line.split(", "))
        resources = {key: int(value) if value.isdigit() else value for key, value in pairs}
        wildcards = re.search(r"^\s+wildcards: (.+)$", block, flags=re.MULTILINE)
        jobs.append((rule, wildcards.group(1) if wildcards else "", resources))
    return jobs


def job_resources(output: str) -> dict[str, dict]:
    """The resources of each rule's (last) job in a dry run."""
    return {rule: resources for rule, _, resources in listed_jobs(output)}


class JobResources(dict):
    """A job's resources as the executor reads them: ``get`` and attributes."""

    __getattr__ = dict.__getitem__


def partition_of(resources: dict, threads: int, tmp_path: Path) -> str | None:
    """The partition the SLURM executor picks for a job from the user's partition file."""
    path = tmp_path / "partitions.yaml"
    path.write_text(yaml.safe_dump(PARTITIONS))
    job = SimpleNamespace(resources=JobResources(resources), threads=threads, name="job")
    logger = SimpleNamespace(info=lambda *_: None, debug=lambda *_: None, warning=print)
    return get_best_partition(read_partition_file(path), job, logger)


@pytest.fixture(scope="module")
def dry_run_resources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    return job_resources(
        slurm_dry_run(tmp_path_factory.mktemp("multi_gpu"), dry_run_config(MULTI_GPU))
    )


def test_dry_run_shows_the_multi_gpu_resources_of_the_llm_rules(
    dry_run_resources, tmp_path: Path
) -> None:
    training, scoring = dry_run_resources["train_reranker"], dry_run_resources["rerank"]
    # Two nodes: one torchrun per node (a task each), four GPUs on each, started by the job.
    assert training["nodes"] == 2 and training["tasks"] == 2 and training["mpi"] == "srun"
    assert training["gres"] == "gpu:a100:4" and "gpu" not in training
    assert partition_of(training, 8, tmp_path) == "gpu"
    # One node: two GPUs, run like any GPU job (the executor's srun around it).
    assert scoring["gpu"] == 2 and scoring["gpu_model"] == "a100"
    assert "nodes" not in scoring and "mpi" not in scoring
    assert partition_of(dry_run_resources["prepare_data"], 1, tmp_path) == "cpu"
    assert all(job["slurm_account"] == "lab" for job in dry_run_resources.values())


def test_the_full_grid_sends_model_jobs_to_the_gpu_partition_and_the_rest_to_cpu(
    tmp_path: Path,
) -> None:
    """config/config.yaml as the user runs it: the jobs that train or run a model ask one GPU
    and land on the GPU partition (popularity, which has no model to run, and ltr, whose trees
    train on CPUs, ask none); the others land on the CPU one."""
    jobs = listed_jobs(slurm_dry_run(tmp_path, REPO / "config/config.yaml"))
    gpu_rules = {"train_retriever", "train_reranker", "rerank"}
    assert gpu_rules <= {rule for rule, _, _ in jobs}
    assert any("reranker=ltr," in f"{wildcards}," for _, wildcards, _ in jobs)
    for rule, wildcards, resources in jobs:
        popularity = rule == "train_retriever" and "retriever=popularity," in f"{wildcards},"
        on_cpus = popularity or "reranker=ltr," in f"{wildcards},"
        wanted = rule in gpu_rules and not on_cpus
        assert resources.get("gpu", 0) == int(wanted), (rule, wildcards, resources)
        expected = "gpu" if wanted else "cpu"
        assert partition_of(resources, 1, tmp_path) == expected, (rule, wildcards)


def sbatch_options(resources: dict[str, dict], rule: str) -> list[str]:
    """The sbatch options the SLURM executor writes for the job of ``rule``."""
    job = SimpleNamespace(
        resources=JobResources(resources[rule]), threads=MULTI_GPU[rule]["threads"]
    )
    params = dict(
        run_uuid="id", slurm_logfile="log", comment_str="rule", account="", partition="",
        workdir=None,
    )  # fmt: skip
    return (get_submit_command(job, params) + set_gres_string(job)).split()


def test_the_executor_asks_sbatch_for_one_task_per_node_and_their_gpus(
    dry_run_resources,
) -> None:
    training = sbatch_options(dry_run_resources, "train_reranker")
    for option in ("--nodes=2", "--ntasks=2", "--cpus-per-task=8", "--gres=gpu:a100:4"):
        assert option in training, training
    assert not any(option.startswith(("--ntasks-per-gpu", "--gpus")) for option in training)
    scoring = sbatch_options(dry_run_resources, "rerank")
    assert "--gpus=a100:2" in scoring and not any(o.startswith("--nodes") for o in scoring)


def test_several_gpus_for_a_rule_that_uses_one_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump(dry_run_config({"train_retriever": {"gpu": 2}}))
    )
    result = run_snakemake("-n", "--configfile", tmp_path / "config.yaml", "--directory", tmp_path)
    assert result.returncode != 0
    assert "resources.train_retriever: train_retriever runs on one GPU of one node" in result.stdout
