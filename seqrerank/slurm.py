"""The user's own SLURM settings: the account and the partitions the workflow's jobs go to.

They differ per user and cluster, so they live outside the repository, in
``~/.config/seqrerank/slurm.yaml`` or the file that ``$SEQRERANK_SLURM_SETTINGS`` names::

    account: my_lab        # omit on clusters without accounting
    cpu_partition: cpu     # where CPU rules run
    gpu_partition: gpu     # where GPU rules (config `resources.<rule>.gpu`) run
    gpu_model: a100        # optional: ask for this GPU model (--gpus=a100:<n>)

rules/common.smk reads them for every job, so this module imports nothing heavy. Without the
file, jobs name no account or partition and the cluster's defaults apply.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

SETTINGS_ENV = "SEQRERANK_SLURM_SETTINGS"
DEFAULT_SETTINGS = Path("~/.config/seqrerank/slurm.yaml")
KEYS = ("account", "cpu_partition", "gpu_partition", "gpu_model")


def load_settings(path: str | Path | None = None) -> dict[str, str]:
    """The settings in ``path``, else in the file ``$SEQRERANK_SLURM_SETTINGS`` names, else in
    the default file; empty when that default file does not exist."""
    named = path or os.environ.get(SETTINGS_ENV)
    path = Path(named or DEFAULT_SETTINGS).expanduser()
    if not path.exists():
        if named:
            raise FileNotFoundError(f"SLURM settings file {path} does not exist")
        return {}
    settings = yaml.safe_load(path.read_text()) or {}
    if not isinstance(settings, dict):
        raise ValueError(f"{path}: expected 'key: value' lines ({', '.join(KEYS)})")
    unknown = sorted(set(settings) - set(KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}; valid keys: {', '.join(KEYS)}")
    return {key: str(value) for key, value in settings.items() if value is not None}


def placement(settings: dict[str, str], gpus: int, nodes: int = 1) -> dict[str, Any]:
    """The SLURM resources of a job asking for ``gpus`` GPUs (on each of its ``nodes``): its
    account and partition (and GPU model), in the resource names of Snakemake's SLURM executor.

    A job on several nodes runs torchrun once per node (seqrerank.distributed), started by the
    job itself with ``srun``: the executor's ``mpi`` resource makes it leave the job's command
    alone (no ``srun`` around it), with one task per node. Its GPUs are asked per node, as GRES;
    ``tasks_per_gpu: 0`` stops the executor from reading ``tasks`` as tasks per GPU."""
    resources: dict[str, Any] = {}
    if "account" in settings:
        resources["slurm_account"] = settings["account"]
    partition = settings.get("gpu_partition" if gpus else "cpu_partition")
    if partition:
        resources["slurm_partition"] = partition
    if nodes > 1:
        model = f"{settings['gpu_model']}:" if "gpu_model" in settings else ""
        resources.update(
            nodes=nodes, tasks=nodes, tasks_per_gpu=0, mpi="srun", gres=f"gpu:{model}{gpus}"
        )
    elif gpus and "gpu_model" in settings:
        resources["gpu_model"] = settings["gpu_model"]
    return resources
