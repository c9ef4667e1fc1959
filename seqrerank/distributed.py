"""One pipeline step in several processes, one per GPU, on one node or several.

A job given several GPUs (config ``resources.<rule>.gpu`` and ``nodes``) calls its pipeline step
through :func:`launch`, which starts torchrun (under ``srun`` on several nodes); every worker
joins the process group and calls the same step the single-process job calls. Inside it, training
wraps the model in DistributedDataParallel and splits each batch over the ranks, scoring splits
the users' batches over the ranks and gathers their rows back in order, and rank 0 alone writes
checkpoints and outputs. With one process every helper here leaves things as they are, so a
single-process job runs exactly the code it always ran.
"""

from __future__ import annotations

import base64
import logging
import os
import pickle
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.elastic.multiprocessing.errors import record
from torch.nn.parallel import DistributedDataParallel

from seqrerank.console import configure_logging

log = logging.getLogger(__name__)
T = TypeVar("T")


def device() -> torch.device:
    """The GPU when there is one: in a job of several processes, the rank's own (the current
    device, which :func:`launch`'s workers set)."""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def place(model: nn.Module) -> torch.device:
    """Put ``model`` on the job's device, the one place where models are placed (the training
    loop and the evaluation call this). A model whose weights its loader already put there (an
    LLM loaded in 4 bits onto the GPU) is left alone: quantized weights cannot be moved."""
    target = device()
    tensors = [*model.parameters(), *model.buffers()]
    if any(t.device != target for t in tensors):
        model.to(target)
    return target


def to_device(batch: T, target: torch.device) -> T:
    """The tensors of a batch (a tensor, or tuples, lists and dicts holding tensors) on
    ``target``; anything else (prompts, item ids in numpy) as it is."""
    if isinstance(batch, torch.Tensor):
        return batch.to(target, non_blocking=True)
    if isinstance(batch, tuple | list):
        return type(batch)(to_device(part, target) for part in batch)
    if isinstance(batch, dict):
        return {key: to_device(value, target) for key, value in batch.items()}
    return batch


@dataclass(frozen=True)
class Processes:
    """The processes of a job: ``per_node`` (one per GPU) on each of ``nodes`` nodes."""

    per_node: int = 1
    nodes: int = 1

    @property
    def total(self) -> int:
        return self.per_node * self.nodes


def launch(
    step: Callable[..., Any],
    processes: Processes,
    log_path: str | Path,
    threads: int,
    **kwargs: Any,
) -> None:
    """Run ``step(threads=threads, **kwargs)``: here when the job has one process, else in
    torchrun's workers, which log to ``log_path`` (rank 0 all, the others their warnings).
    ``threads`` are the job's cores on each node, which its processes there share."""
    if processes.total == 1:
        step(threads=threads, **kwargs)
        return
    # The call travels pickled on the command line: every node's workers read the same one.
    call = pickle.dumps((str(log_path), step, {"threads": threads, **kwargs}))
    command = [*_launcher(processes, threads), "-m", __name__, base64.b64encode(call).decode()]
    log.info("running %s in %d processes under torchrun", step.__name__, processes.total)
    # Workers see the modules this process sees: Snakemake's script preamble put the workflow's
    # seqrerank (not installed in a job's env) and Snakemake's own on sys.path.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, sys.path))}
    result = subprocess.run(command, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"{step.__name__} failed in one of its {processes.total} processes "
            f"(exit status {result.returncode}); the traceback is in {log_path}"
        )


def _launcher(processes: Processes, threads: int) -> list[str]:
    """torchrun: standalone on one node; on several, one agent per node started by ``srun``,
    meeting at a port of this node (the first of the SLURM allocation)."""
    torchrun = [sys.executable, "-m", "torch.distributed.run"]
    torchrun.append(f"--nproc-per-node={processes.per_node}")
    if processes.nodes == 1:
        return [*torchrun, "--standalone"]
    job = os.environ.get("SLURM_JOB_ID")
    if job is None:
        raise RuntimeError(f"a job on {processes.nodes} nodes runs under SLURM only")
    # A step gets one core per task unless told: the job's were given as cores per task.
    srun = [
        "srun",
        f"--nodes={processes.nodes}",
        "--ntasks-per-node=1",
        f"--cpus-per-task={threads}",
        f"--gres=gpu:{processes.per_node}",
        "--kill-on-bad-exit=1",
    ]
    rendezvous = [
        f"--nnodes={processes.nodes}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={socket.gethostname()}:{_free_port()}",
        f"--rdzv-id={job}",
    ]
    return [*srun, *torchrun, *rendezvous]


def _free_port() -> int:
    with closing(socket.socket()) as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


@record
def main() -> None:
    """A torchrun worker: join the process group and run the call :func:`launch` passed."""
    log_path, step, kwargs = pickle.loads(base64.b64decode(sys.argv[1]))
    configure_logging(log_path)
    with _process_group():
        step(**kwargs)


@contextmanager
def _process_group() -> Iterator[None]:
    """The process group of torchrun's workers (from the environment torchrun sets): NCCL with
    one GPU per process, or gloo on CPUs."""
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


# ---- who am I --------------------------------------------------------------------------------


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0, the process that writes checkpoints and outputs."""
    return rank() == 0


def processes_on_this_node() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", 1))


# ---- scoring: users split over the ranks, rows gathered back ---------------------------------


def shard(batches: Sequence[T]) -> list[T]:
    """This rank's share of batches that every rank formed alike: every ``world_size``-th, so
    that batches sorted by size spread evenly."""
    return list(batches[rank() :: world_size()])


def gather_rows(batches: Sequence[np.ndarray], *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """``arrays`` with every rank's rows filled in, on every rank: each rank filled the rows of
    its ``batches`` (of row indices) and left the others alone."""
    if world_size() == 1:
        return arrays
    rows = np.concatenate([np.empty(0, dtype=np.int64), *batches])
    filled: list[Any] = [None] * world_size()
    dist.all_gather_object(filled, (rows, [array[rows] for array in arrays]))
    for rank_rows, values in filled:
        for array, value in zip(arrays, values, strict=True):
            array[rank_rows] = value
    return arrays


# ---- training: every batch split over the ranks, gradients averaged by DDP -------------------


class _Loss(nn.Module):
    """A model's training loss as a module's forward: DDP syncs gradients of what its own
    forward ran."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: Any) -> torch.Tensor:
        return self.model.loss(batch)


def data_parallel(model: nn.Module) -> Callable[[Any], torch.Tensor]:
    """``model.loss``; with several processes through DistributedDataParallel, which averages
    the ranks' gradients. Only trainable parameters are synchronised: the frozen base model
    under a LoRA adapter, and the buffers (constants such as rotary frequencies), are the same
    in every process already, and broadcasting a 7B model would only cost time."""
    if world_size() == 1:
        return model.loss
    loss = _Loss(model)
    constant = [name for name, p in loss.named_parameters() if not p.requires_grad]
    constant += [name for name, _ in loss.named_buffers()]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(loss, constant)
    device_ids = [torch.cuda.current_device()] if torch.cuda.is_available() else None
    return DistributedDataParallel(loss, device_ids=device_ids)


def batch_share(batch: tuple) -> tuple[tuple, float]:
    """This rank's part of a training batch that every rank drew alike, and the weight of its
    mean loss that makes DDP's average over the ranks the mean over the whole batch: so the
    optimizer steps on the same batches as one process would, whatever the number of GPUs.

    A batch is a tuple of per-example sequences (lists or tensors, examples first) and its loss
    a mean over examples. A rank left without examples (a batch smaller than the world) still
    runs one, weighted 0: DDP needs every rank's backward pass."""
    world = world_size()
    if world == 1:
        return batch, 1.0
    size = len(batch[0])
    start, stop = size * rank() // world, size * (rank() + 1) // world
    if start == stop:
        return tuple(column[:1] for column in batch), 0.0
    return tuple(column[start:stop] for column in batch), (stop - start) * world / size


def average(value: float) -> float:
    """The mean of ``value`` over the ranks."""
    if world_size() == 1:
        return value
    total = torch.tensor([value], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(total)
    return total.item() / world_size()


def from_main(value: T) -> T:
    """Rank 0's ``value``, on every rank: decisions (best epoch, early stop) are rank 0's."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def _collective_device() -> torch.device:
    return torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")


if __name__ == "__main__":
    main()
