"""Shared fixtures: the prepared demo dataset and one end-to-end run of the demo workflow.

Both are session-scoped: the dataset takes a few seconds to generate, the workflow about ten
minutes, and every test that needs them only reads them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import HTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from seqrerank.data.dataset import SequenceData, as_dataset_files, load_sequences
from seqrerank.data.prepare import prepare_dataset
from seqrerank.encoders import FeatureSettings, build_item_features
from seqrerank.features import ItemFeatures, load_feature_files
from seqrerank.llm.tiny import TINY_MODELS as TINY_MODEL_KINDS
from seqrerank.llm.tiny import save_tiny_model
from seqrerank.methods.base import Recommender
from seqrerank.model_files import build_model, load_model
from seqrerank.pipeline import method_inputs

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = yaml.safe_load((REPO / "config/demo.yaml").read_text())
# The demo's tiny open_clip model (random weights, built from config: no download).
TINY_CLIP = FeatureSettings(**DEMO_CONFIG["features"])
SHARED = REPO.parent / "shared"
# The tiny random-weight models as checkpoint folders (seqrerank.llm.tiny), as the demo's
# tiny_model rule writes them; built once per session by the `tiny_models` fixture, which the
# modules that load them use.
TINY_MODELS = Path(tempfile.mkdtemp(prefix="seqrerank-tiny-models-"))


def tiny_model(kind: str) -> str:
    """The checkpoint folder of a tiny model (``qwen3``, ``qwen3vl``, ``blip2``, ``t5``)."""
    return str(TINY_MODELS / f"tiny-{kind}")


SNAKEMAKE = Path(sys.executable).with_name("snakemake")

# The demo dataset's filters in config/demo.yaml, at the generator's default size (1000 users; the
# workflow demo makes 600 to fit its time budget): the models' tests read this larger version.
DEMO_SPEC = {
    "source": "synthetic",
    "min_rating": 3,
    "require_title": True,
    "min_uc": 5,
    "min_sc": 5,
}


SLURM_CLUSTER_OPTION = "--slurm-cluster"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        SLURM_CLUSTER_OPTION,
        action="store_true",
        help="run the tests marked slurm (make test-slurm; on by default where CI=true)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The SLURM cluster test changes the machine (as root it installs Debian's SLURM with apt
    and writes /etc/slurm/slurm.conf): it runs only when asked, or in CI, which keeps it."""
    if config.getoption(SLURM_CLUSTER_OPTION) or os.environ.get("CI") == "true":
        return
    skip = pytest.mark.skip(
        reason="the SLURM cluster test installs SLURM and writes /etc/slurm/slurm.conf; "
        "run it with `make test-slurm` (or `CI=true make test`)"
    )
    for item in items:
        if item.get_closest_marker("slurm"):
            item.add_marker(skip)


def build(
    method: str,
    data: SequenceData,
    data_dir: Path,
    params: dict,
    seed: int = 0,
    features: dict[str, Path] | None = None,
) -> Recommender:
    """A fresh model of ``method`` for ``data``, given the item table, images and feature files
    of the prepared dataset in ``data_dir`` as the workflow gives them."""
    inputs = method_inputs(as_dataset_files(data_dir), data, features)
    return build_model(method, data, params, seed, **inputs)


def load(
    path: Path, data: SequenceData, data_dir: Path, features: dict[str, Path] | None = None
) -> Recommender:
    """The model saved in ``path``, rebuilt for the prepared dataset in ``data_dir``."""
    return load_model(path, data, **method_inputs(as_dataset_files(data_dir), data, features))


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """The test machine has two cores shared with other work: with more than one intra-op
    thread per process, torch spins against the other load and an epoch takes 20x longer."""
    torch.set_num_threads(1)


def snakemake_env() -> dict[str, str]:
    """Environment of a Snakemake subprocess: one torch thread per job (see above), and the
    virtualenv's bin first so the jobs' `python` is this interpreter."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_snakemake(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run Snakemake from the repository root; stdout and stderr together in ``.stdout``."""
    return subprocess.run(
        [str(SNAKEMAKE), *map(str, args)],
        cwd=REPO,
        env=snakemake_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def snakemake_cli():
    """:func:`run_snakemake`, for tests that call the real command line."""
    return run_snakemake


@pytest.fixture(scope="session")
def tiny_models() -> Iterator[Path]:
    for kind in TINY_MODEL_KINDS:
        save_tiny_model(kind, tiny_model(kind))
    yield TINY_MODELS
    shutil.rmtree(TINY_MODELS, ignore_errors=True)


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The prepared demo dataset (train/val/test.txt, items.csv, ...)."""
    root = tmp_path_factory.mktemp("demo_data")
    prepare_dataset(DEMO_SPEC, root / "raw", root / "data")
    return root / "data"


@pytest.fixture(scope="session")
def demo_data(demo_dir: Path) -> SequenceData:
    return load_sequences(demo_dir)


@pytest.fixture(scope="session")
def demo_feature_files(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The demo's image and text features, computed by the demo's tiny CLIP."""
    out = tmp_path_factory.mktemp("features")
    for modality in ("image", "text"):
        build_item_features(modality, demo_dir, TINY_CLIP, out / f"{modality}.pt")
    return {modality: out / f"{modality}.pt" for modality in ("image", "text")}


@pytest.fixture(scope="session")
def demo_features(demo_feature_files: dict, demo_data: SequenceData) -> dict[str, ItemFeatures]:
    return load_feature_files(demo_feature_files, demo_data.num_items)


@pytest.fixture
def hand_data() -> SequenceData:
    """Three users over items 1..9: full sequences 1 2 3 4 5 | 6 7 8 9 | 2 4 6 8."""
    return SequenceData(
        num_items=9,
        train=[np.array([1, 2, 3]), np.array([6, 7]), np.array([2, 4])],
        val=np.array([4, 8, 6]),
        test=np.array([5, 9, 8]),
    )


@dataclass(frozen=True)
class WorkflowRun:
    workdir: Path
    output: str

    @property
    def results(self) -> Path:
        return self.workdir / "results"


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> WorkflowRun:
    """`snakemake --configfile config/demo.yaml` run once, end to end, into a temporary
    directory (so nothing lands in the repository's results/)."""
    workdir = tmp_path_factory.mktemp("demo_run")
    # A guard against a hung run, not a speed check: the demo takes about 10 minutes on two
    # idle cores, longer on a busy machine.
    result = run_snakemake(
        "--configfile", "config/demo.yaml", "--cores", "2", "--directory", workdir, timeout=2400
    )
    if result.returncode != 0:
        pytest.fail(f"the demo workflow failed:\n{result.stdout[-5000:]}")
    return WorkflowRun(workdir, result.stdout)


@pytest.fixture(scope="session")
def demo_report(demo_run: WorkflowRun) -> Path:
    """`snakemake --report` of the demo run (whose `rule all` built the report's files)."""
    report = demo_run.results / "demo/report.html"
    result = run_snakemake(
        "--configfile",
        "config/demo.yaml",
        "--directory",
        demo_run.workdir,
        "--report",
        report,
        timeout=300,
    )
    if result.returncode != 0:
        pytest.fail(f"snakemake --report failed:\n{result.stdout[-5000:]}")
    return report


# The .invalid top-level domain never resolves (RFC 2606): a DNS failure without a network.
UNRESOLVABLE_URL = "http://nonexistent.invalid/x.jpg"


@pytest.fixture
def name_lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The host names looked up during the test, in order; the real resolver still answers."""
    lookups: list[str] = []
    resolve = socket.getaddrinfo

    def recorded(host, *args, **kwargs):
        lookups.append(host)
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", recorded)
    return lookups


@contextmanager
def serving(httpd: HTTPServer) -> Iterator[HTTPServer]:
    """Run a test HTTP server (bound to 127.0.0.1) in a thread for the block's duration."""
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
