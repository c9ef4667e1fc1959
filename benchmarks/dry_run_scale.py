"""The dry run of a large grid: 5 datasets x 4 retrievers x 8 rerankers x 2 modes x 3 seeds.

Prints the seconds and peak memory of `snakemake -n` (parsing the workflow and building the DAG,
what every submission starts with), and of parsing alone (`--list-rules`), which every SLURM job
repeats. Each runs in a fresh child process. The registry holds fewer methods than this grid, so
the child registers aliases of the existing ones, half of the rerankers trained per candidate
source (as LLM rerankers are), which multiplies their training jobs by the retrievers.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
GRID = {"datasets": 5, "retrievers": 4, "rerankers": 8, "modes": 2, "seeds": 3}


def grid_config() -> dict:
    return {
        "run": "scale",
        "seeds": list(range(GRID["seeds"])),
        "datasets": {
            f"data{i}": {"source": "synthetic", "synthetic": {"seed": i}}
            for i in range(GRID["datasets"])
        },
        "retrievers": [f"retriever{i}" for i in range(GRID["retrievers"])],
        "rerankers": [f"reranker{i}" for i in range(GRID["rerankers"])],
        "modes": ["retrieval", "ground_truth"][: GRID["modes"]],
    }


def register_aliases() -> None:
    from seqrerank import registry

    for i in range(GRID["retrievers"]):
        registry.RETRIEVERS[f"retriever{i}"] = registry.RETRIEVERS["lrurec"]
    for i in range(GRID["rerankers"]):
        spec = registry.RERANKERS["bert4rec"]
        trains_on = "candidates" if i % 2 else spec.trains_on
        registry.RERANKERS[f"reranker{i}"] = registry.MethodSpec(spec.target, trains_on)


def child(args: list[str]) -> None:
    """Run Snakemake in this process with the aliases registered; print its figures."""
    from snakemake.cli import main as snakemake_main

    register_aliases()
    started = time.perf_counter()
    try:
        snakemake_main(args)
    except SystemExit as done:
        if done.code:
            raise
    usage = resource.getrusage(resource.RUSAGE_SELF)
    figures = {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,  # of the whole process, imports included
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }
    print(json.dumps(figures))


def measure(args: list[str]) -> tuple[dict, str]:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.dry_run_scale", "--child", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    *output, figures = result.stdout.strip().splitlines()
    return json.loads(figures), "\n".join(output)


def main() -> None:
    with tempfile.TemporaryDirectory() as workdir:
        configfile = Path(workdir) / "grid.yaml"
        configfile.write_text(yaml.safe_dump(grid_config()))
        common = ["--configfile", str(configfile), "--directory", workdir]
        dag, output = measure(["-n", "--forceall", "--quiet", "rules", *common])
        parse, _ = measure(["--list-rules", *common])
    jobs = int(next(line.split()[1] for line in output.splitlines() if line.startswith("total")))
    grid = " x ".join(f"{n} {name}" for name, n in GRID.items())
    print(f"\n== Dry run of a large grid: {grid} ==")
    print(
        f"DAG of {jobs} jobs: {dag['seconds']:.1f} s ({dag['cpu_seconds']:.1f} CPU s), "
        f"peak RSS {dag['peak_rss_mb']:.0f} MB (Python {sys.version.split()[0]})"
    )
    print(
        f"parsing the workflow alone (every SLURM job does): {parse['seconds']:.2f} s "
        f"({parse['cpu_seconds']:.1f} CPU s), peak RSS {parse['peak_rss_mb']:.0f} MB"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
    else:
        main()
