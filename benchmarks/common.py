"""Shared pieces of the benchmarks: where the data is, and how time and memory are measured."""

from __future__ import annotations

import multiprocessing
import os
import platform
import resource
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TypeVar

import torch

from seqrerank.data.prepare import prepare_dataset

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
BEAUTY = SHARED / "data" / "amazon-beauty"
BENCH_RESULTS = REPO / "results" / "bench"
T = TypeVar("T")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def prepared_dataset(name: str) -> Path:
    """Prepare (once, cached under results/bench/) the real Beauty sequences with their attribute
    features when ../shared has them, else the built-in demo data."""
    out = BENCH_RESULTS / name / "data"
    if (out / "stats.json").exists():
        return out
    if name == "beauty":
        spec = {
            "source": "sequences",
            "path": str(BEAUTY / "Beauty.txt"),
            "attributes": str(BEAUTY / "Beauty_item2attributes.json"),
            "min_uc": 5,
            "min_sc": 5,
        }
    else:
        spec = {"source": "synthetic", "min_rating": 3, "require_title": True}
    prepare_dataset(spec, raw_dir=BENCH_RESULTS / name / "raw", out_dir=out)
    return out


def environment() -> dict:
    """What produced a figure: versions and machine."""
    commit = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True
    )
    return {
        "seqrerank_commit": commit.stdout.strip() or "unknown",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
    }


def bench_dataset() -> str:
    """The real Beauty sequences when ../shared has them, else the built-in demo data."""
    return "beauty" if (BEAUTY / "Beauty.txt").exists() else "demo"


def epoch_budget(epochs: int = 40, patience: int = 5) -> dict[str, int]:
    """Epochs and early-stopping patience: BENCH_EPOCHS and BENCH_PATIENCE where set, else the
    given defaults."""
    return {
        "epochs": int(os.environ.get("BENCH_EPOCHS", epochs)),
        "patience": int(os.environ.get("BENCH_PATIENCE", patience)),
    }


def in_fresh_process(function: Callable[..., T], *args: object) -> T:
    """``function(*args)`` in a new process, so that its peak memory is its own."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(function, *args).result()
