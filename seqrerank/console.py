"""Logging and progress bars that stay readable in a terminal and in a Snakemake/SLURM log."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: str, total: int | None = None) -> tqdm:
    """A live bar in a terminal; in a log file, where every refresh is a new line, one line
    every 30 seconds and the final state."""
    interactive = sys.stderr.isatty()
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        mininterval=0.5 if interactive else 30,
        leave=not interactive,
        dynamic_ncols=True,
        disable=not _first_rank(),
    )


def configure_logging(log_path: str | Path | None) -> None:
    """Send logging and progress bars (stderr) to a rule's log file; of a job's other torchrun
    workers, only warnings and errors."""
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        sys.stderr = open(log_path, "a", buffering=1)  # noqa: SIM115 - lives as long as the job
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO if _first_rank() else logging.WARNING,
        force=True,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _first_rank() -> bool:
    """Not one of the other workers of a job that torchrun runs (seqrerank.distributed): one
    log and one progress bar per job. Read from torchrun's environment, so that this module
    needs no torch."""
    return os.environ.get("RANK", "0") == "0"
