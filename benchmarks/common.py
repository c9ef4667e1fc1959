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
from typing import Any, TypeVar

import torch

from seqrerank.data.dataset import SequenceData, as_dataset_files
from seqrerank.data.prepare import prepare_dataset
from seqrerank.io import content_digest
from seqrerank.llm import tiny
from seqrerank.methods.base import Recommender
from seqrerank.model_files import build_model
from seqrerank.pipeline import method_inputs

REPO = Path(__file__).resolve().parents[1]
# The shared data beside the repository (../shared), or inside it (a copy of the checkout that
# carries its shared/ folder along, as on a GPU machine).
SHARED = next(
    (path for path in (REPO.parent / "shared", REPO / "shared") if path.is_dir()),
    REPO.parent / "shared",
)
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
    """The real Beauty sequences when ../shared has them, else the built-in demo data;
    BENCH_DATASET=demo chooses the demo data anyway (a quick check of a benchmark's code)."""
    chosen = os.environ.get("BENCH_DATASET")
    if chosen not in (None, "", "beauty", "demo"):
        raise SystemExit(f"BENCH_DATASET must be beauty or demo, not {chosen!r}")
    if chosen == "demo" or not (BEAUTY / "Beauty.txt").exists():
        if chosen == "beauty":
            raise SystemExit(f"BENCH_DATASET=beauty, but {BEAUTY / 'Beauty.txt'} does not exist")
        return "demo"
    return "beauty"


def tiny_checkpoint(kind: str, **config: Any) -> str:
    """The checkpoint folder of a tiny random-weight model of ``kind`` (seqrerank.llm.tiny),
    written once under results/bench/models/ and again whenever tiny.py changes."""
    suffix = "".join(f"-{key}{value}" for key, value in sorted(config.items()))
    digest = content_digest([Path(tiny.__file__)])[:8]
    path = BENCH_RESULTS / "models" / f"tiny-{kind}{suffix}-{digest}"
    if not (path / "config.json").exists():
        tiny.save_tiny_model(kind, path, **config)
    return str(path)


def build_method(
    method: str,
    data: SequenceData,
    data_dir: Path,
    params: dict[str, Any],
    seed: int = 0,
    features: dict[str, Path] | None = None,
) -> Recommender:
    """A fresh model of ``method`` for the prepared dataset in ``data_dir``, given its item
    table, images and the feature files ``features`` as the workflow gives them."""
    inputs = method_inputs(as_dataset_files(data_dir), data, features)
    return build_model(method, data, params, seed, **inputs)


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
