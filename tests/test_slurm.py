"""The demo grid through ``profiles/slurm`` on a real single-node SLURM cluster.

The model rules ask for a GPU here (config ``resources.<rule>.gpu``), so the test sees GPU jobs
land on the ``gpu`` partition and the others on ``cpu``. Conda and Apptainer cannot be installed
on the test machine, so the profile runs without its software deployment; everything else is the
shipped profile. ``make test-slurm`` runs this file alone; tests/slurm_cluster.py runs the cluster.
It changes the machine (SLURM installed, /etc/slurm/slurm.conf), so a plain ``make test`` skips it
unless ``CI=true`` (tests/conftest.py).
"""

from __future__ import annotations

import io
import os
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import slurm_cluster
import yaml
from conftest import REPO, SNAKEMAKE, snakemake_env
from test_workflow import job_stats

pytestmark = pytest.mark.slurm

GPU_RULES = {"train_reranker", "rerank"}
SLURM_GRID = {"retrievers": ["lrurec", "vbpr"], "rerankers": ["bert4rec", "qwen"]}
# A missing or broken status command makes Snakemake poll forever, deaf to SIGTERM.
TIMEOUT_SECONDS = 600


@pytest.fixture(scope="module")
def cluster_env() -> dict[str, str]:
    reason = slurm_cluster.unavailable_reason()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the SLURM test, but {reason}")
        pytest.skip(reason)
    with slurm_cluster.local_cluster() as env:
        yield env


def slurm_test_profile(path: Path) -> Path:
    """profiles/slurm without conda/Apptainer, with the no-accounting status command, fast first
    status checks and the job logs kept for the checks below."""
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    del profile["software-deployment-method"], profile["apptainer-args"]
    profile.update(
        {
            "slurm-status-command": "squeue",
            "slurm-no-account": True,
            "slurm-init-seconds-before-status-checks": 5,
            "slurm-keep-successful-logs": True,
            "latency-wait": 5,
        }
    )
    path.mkdir()
    (path / "config.yaml").write_text(yaml.safe_dump(profile))
    return path


@pytest.fixture(scope="module")
def slurm_run(cluster_env, tmp_path_factory: pytest.TempPathFactory):
    """The demo grid, run through SLURM: (workdir, snakemake output, SLURM's jobs)."""
    root = tmp_path_factory.mktemp("slurm_run")
    workdir = root / "work"
    config = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    # A part of the demo grid (a sequence and a multimodal retriever, a sequence and an LLM
    # reranker) keeps the test's time down; its rows must equal the local run's.
    config.update(SLURM_GRID)
    # One core per model job, as in the local demo run, so the tables can be compared.
    config["resources"] = {
        "train_retriever": {"threads": 1, "mem_mb": 1000},
        "train_reranker": {"threads": 1, "mem_mb": 1000, "gpu": 1},
        "rerank": {"threads": 1, "mem_mb": 1000, "gpu": 1},
        "item_features": {"threads": 1, "mem_mb": 1000},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    # The user's partitions, in the SLURM executor's partition file (docs/slurm.md).
    partitions = {"partitions": {"cpu": {}, "gpu": {"max_gpu": 1}}}
    (root / "partitions.yaml").write_text(yaml.safe_dump(partitions))
    env = {
        **snakemake_env(),
        **cluster_env,
        "SNAKEMAKE_SLURM_PARTITIONS": str(root / "partitions.yaml"),
    }
    command = [
        "timeout", "-s", "KILL", str(TIMEOUT_SECONDS), str(SNAKEMAKE),
        "--profile", str(slurm_test_profile(root / "profile")),
        "--configfile", str(root / "config.yaml"),
        "--directory", str(workdir),
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert result.returncode == 0, result.stdout[-5000:]
    return workdir, result.stdout, slurm_cluster.jobs(cluster_env)


def rule_of(job: dict[str, str]) -> str:
    """The rule of a job submitted by Snakemake (its comment: rule_<name>_wildcards_...)."""
    return job["Comment"].removeprefix("rule_").split("_wildcards_")[0]


def test_every_job_of_the_grid_ran_as_a_slurm_job(slurm_run) -> None:
    workdir, output, jobs = slurm_run
    # Local rules (the demo's tiny checkpoints, downloads) run where Snakemake runs.
    local = set(re.findall(r"^localrule (\w+):", output, re.MULTILINE))
    planned = {
        rule: n for rule, n in job_stats(output).items() if rule not in {"total", "all", *local}
    }
    ran = {}
    for job in jobs:
        ran[rule_of(job)] = ran.get(rule_of(job), 0) + 1
        assert job["JobState"] == "COMPLETED", job
        assert job["ExitCode"] == "0:0", job
        logs = list((workdir / ".snakemake/slurm_logs").rglob(f"{job['JobId']}.log"))
        assert len(logs) == 1, f"no SLURM log of job {job['JobId']} ({rule_of(job)})"
    assert ran == planned


def test_gpu_rules_ran_on_the_gpu_partition_with_a_gpu(slurm_run) -> None:
    jobs = slurm_run[2]
    assert {rule_of(j) for j in jobs} >= GPU_RULES
    for job in jobs:
        gpu = rule_of(job) in GPU_RULES
        assert job["Partition"] == ("gpu" if gpu else "cpu"), job
        assert ("gpu" in job.get("TresPerJob", "")) == gpu, job


def test_slurm_table_equals_the_local_run(slurm_run, demo_run) -> None:
    workdir = slurm_run[0]
    slurm = pd.read_csv(workdir / "results/demo/comparison.csv")
    local = pd.read_csv(demo_run.results / "demo/comparison.csv")
    in_grid = local["retriever"].isin([*SLURM_GRID["retrievers"], "none"]) & local["reranker"].isin(
        [*SLURM_GRID["rerankers"], "none"]
    )
    # Through a CSV as the SLURM run's table was, so that each column's type is read alike
    # (a column empty in this part of the grid reads as float).
    local = pd.read_csv(io.StringIO(local[in_grid].to_csv(index=False)))
    # Every column but the tests' is equal. The p-values are Holm-adjusted over the table's
    # tests, and this part of the grid has fewer: against Stage 1 (the same pairs here), each is
    # at most the local one. The best row of a block, and so the tests against it, can differ.
    tests = ["p_ndcg@10_vs_stage1", "p_ndcg@10_vs_best", "ndcg@10_sig"]
    pd.testing.assert_frame_equal(slurm.drop(columns=tests), local.drop(columns=tests))
    vs_stage1 = "p_ndcg@10_vs_stage1"
    tested = local[vs_stage1].notna()
    assert tested.any()
    assert (slurm[vs_stage1].notna() == tested).all()
    assert (slurm.loc[tested, vs_stage1] <= local.loc[tested, vs_stage1] + 1e-12).all()
