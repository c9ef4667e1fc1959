"""A training job killed mid-run (as SLURM kills one at its time limit) continues from its last
epoch's checkpoint when it runs again, instead of starting over."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, SNAKEMAKE, run_snakemake, snakemake_env

pytestmark = pytest.mark.workflow

RETRIEVER = "results/tiny/retrieval/lrurec/seed42"


def tiny_grid(epochs: int, **dataset) -> dict:
    return {
        "run": "resume",
        "datasets": {
            "tiny": {
                "source": "synthetic",
                "synthetic": {"num_users": 60, "num_items": 40, "seed": 1},
                **dataset,
            }
        },
        "retrievers": ["lrurec"],
        "retrieval": {"epochs": epochs, "patience": epochs, "top_k": 20},
        "rerank": {"top_k": 20},
        "methods": {"lrurec": {"model": {"hidden": 8, "blocks": 1, "max_len": 10}}},
    }


def test_a_killed_training_job_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(tiny_grid(epochs=20)))
    target = f"{RETRIEVER}/retrieved_metrics.json"
    args = ["--configfile", configfile, "--directory", tmp_path, "--cores", "1", target]
    first = subprocess.Popen(
        [SNAKEMAKE, *args],
        cwd=REPO,
        env=snakemake_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill takes the job along
    )
    checkpoint = tmp_path / RETRIEVER / "checkpoints/last.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert checkpoint.exists() and first.poll() is None, "training ended before it was killed"
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert not (tmp_path / RETRIEVER / "model.pt").exists()

    assert run_snakemake("--unlock", *args).returncode == 0
    result = run_snakemake("--rerun-incomplete", *args, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    log = (tmp_path / "results/tiny/logs/train_retriever_lrurec_seed42.log").read_text()
    assert "resuming from" in log
    resumed = log.split("resuming from", 1)[1]
    assert "epoch 1:" not in resumed  # the epochs before the kill were not trained again
    assert "epoch 20:" in resumed


@pytest.mark.parametrize("force", [False, True])
def test_a_retriever_on_changed_data_retrains_from_scratch(tmp_path: Path, force: bool) -> None:
    """Data prepared anew with another min_rating reruns the training job (also when forced,
    the README's way to retrain): it must train from epoch 1, not export the old data's model."""
    configfile = tmp_path / "config.yaml"
    target = f"{RETRIEVER}/retrieved_metrics.json"
    args = ["--configfile", configfile, "--directory", tmp_path, "--cores", "1", target]
    metrics = []
    for min_rating in (0, 2):
        configfile.write_text(yaml.safe_dump(tiny_grid(epochs=3, min_rating=min_rating)))
        forced = ["--forcerun", "train_retriever"] if force and min_rating else []
        result = run_snakemake(*args, *forced, timeout=300)
        assert result.returncode == 0, result.stdout[-3000:]
        metrics.append((tmp_path / target).read_text())
    log = (tmp_path / "results/tiny/logs/train_retriever_lrurec_seed42.log").read_text()
    second_run = log.split("starting over", 1)[1]
    assert "resuming from" not in log
    assert "epoch 1:" in second_run and "epoch 3:" in second_run
    assert metrics[0] != metrics[1]
