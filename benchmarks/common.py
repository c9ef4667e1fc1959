"""Shared pieces of the benchmarks: where the data is, and how time and memory are measured."""

from __future__ import annotations

import os
import platform
import resource
import time
from pathlib import Path

import torch

from seqrerank.data.prepare import prepare_dataset

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
BEAUTY = SHARED / "data" / "amazon-beauty"
BENCH_RESULTS = REPO / "results" / "bench"


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
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
    }


def bench_dataset() -> str:
    """The real Beauty sequences when ../shared has them, else the built-in demo data."""
    return "beauty" if (BEAUTY / "Beauty.txt").exists() else "demo"


def epoch_budget() -> dict[str, int]:
    """Epochs and early-stopping patience, from BENCH_EPOCHS (default 40) and BENCH_PATIENCE (5)."""
    return {
        "epochs": int(os.environ.get("BENCH_EPOCHS", 40)),
        "patience": int(os.environ.get("BENCH_PATIENCE", 5)),
    }
