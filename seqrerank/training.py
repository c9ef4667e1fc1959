"""The one training loop every trainable method shares.

Per epoch: one pass over the method's training batches, then validation; the best epoch by the
configured metric is kept, training stops after ``patience`` epochs without improvement, and a
checkpoint written after every epoch lets an interrupted job resume where it stopped. Each epoch
draws its randomness from ``(seed, epoch)`` alone, so a resumed run matches an uninterrupted one.

In a job of several processes (:mod:`seqrerank.distributed`) every rank draws the same batches
and trains on its part of each under DistributedDataParallel, so an optimizer step sees the same
examples as with one process; rank 0 decides on the best epoch and early stopping, and alone
writes the checkpoints, which every rank resumes from.

The loop places the model and every batch on the job's device (the GPU when the job has one,
under torchrun the rank's own; :func:`seqrerank.distributed.place`): model files never place
themselves. On a GPU, training runs under bf16 autocast with TF32 matrix products, unless the
settings say ``precision: fp32`` or the method does not tolerate it (``mixed_precision``).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch

from seqrerank import distributed
from seqrerank.candidates import CandidateTraining
from seqrerank.console import progress
from seqrerank.data.dataset import SequenceData
from seqrerank.io import atomic_path, content_digest
from seqrerank.methods.base import Recommender

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    epochs: int
    lr: float
    batch_size: int
    patience: int
    metric: str = "ndcg@10"
    weight_decay: float = 0.0
    seed: int = 42
    precision: Literal["bf16", "fp32"] = "bf16"
    """On a GPU: bf16 autocast and TF32 matrix products, or plain fp32 throughout."""
    lr_decay_epochs: int | None = None
    """Train at most this many epochs, the learning rate falling linearly from ``lr`` towards
    zero over them (BERT's schedule, which BERT4Rec's original code trains with); None keeps
    it constant."""


def seed_everything(seed: int) -> None:
    # cuBLAS is deterministic only with a fixed workspace, set before CUDA starts.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(seed)
    # The flag that torch.use_deterministic_algorithms sets, without the import of
    # torch._inductor it also does (4 s in every job) for compiled code: a model that is
    # compiled gets inductor's flag where it is compiled (seqrerank.llm.loading).
    torch._C._set_deterministic_algorithms(True, warn_only=True)


def _fingerprint(model: Recommender, settings: TrainSettings, inputs: str) -> str:
    """Identifies the run a checkpoint belongs to, so that nothing but an interrupted run of the
    very same job is resumed: ``inputs`` (the caller's digest of the model's parameters and of
    the content of every file the run learns from), the model's class and parameter shapes, the
    source of the method's code, and the training settings. The stopping rule (epochs, patience)
    is left out: every epoch's randomness depends on the seed and epoch alone, so a longer
    budget continues the same run (see :func:`_resumable`)."""
    shapes = {name: list(p.shape) for name, p in model.state_dict().items()}
    trajectory = {k: v for k, v in asdict(settings).items() if k not in ("epochs", "patience")}
    payload = json.dumps(
        [type(model).__name__, shapes, trajectory, inputs, _source_digest(type(model))],
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _source_digest(cls: type[Recommender]) -> str:
    """The code of a method: the files of its class and of the classes it inherits from down to
    the interface (an edited model file must not resume a checkpoint of the old code)."""
    files = {
        inspect.getsourcefile(c)
        for c in cls.__mro__
        if issubclass(c, Recommender) and c is not Recommender
    }
    return content_digest(sorted(f for f in files if f))


def _resumable(history: list[dict], settings: TrainSettings) -> bool:
    """Whether a run with ``settings`` would have trained every epoch of ``history``; if it had
    stopped earlier, resuming would keep epochs that a fresh run never trains."""
    if len(history) > settings.epochs:
        return False
    return all(
        _epochs_since_best(history[:trained]) < settings.patience
        for trained in range(1, len(history))
    )


def fit(
    model: Recommender,
    data: SequenceData | CandidateTraining,
    settings: TrainSettings,
    checkpoint_dir: Path,
    validate: Callable[[Recommender], dict[str, float]],
    inputs: str = "",
) -> list[dict]:
    """Train ``model`` in place, leave it holding the best epoch's weights, return the history.
    ``data`` is what the method's ``training_batches`` consume: the sequences, or for a reranker
    that trains on candidates, the lists of the train task. ``inputs`` identifies what the run
    learns from beyond the model and settings (see :func:`_fingerprint`): a checkpoint written
    for other inputs is not resumed."""
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path = checkpoint_dir / "last.pt", checkpoint_dir / "best.pt"
    target = distributed.place(model)
    precision = mixed_precision(model, settings, target)
    # Only what trains (a LoRA adapter, not the frozen language model under it).
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=settings.lr,
        weight_decay=settings.weight_decay,
    )
    fingerprint = _fingerprint(model, settings, inputs)
    history: list[dict] = []
    best, start_epoch = float("-inf"), 1

    if last_path.exists():
        state = torch.load(last_path, map_location="cpu", weights_only=True)
        if state["fingerprint"] == fingerprint and _resumable(state["history"], settings):
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            history, best = state["history"], state["best"]
            start_epoch = state["epoch"] + 1
            log.info("resuming from %s after epoch %d", last_path, state["epoch"])
        else:
            log.warning(
                "starting over: %s was written for other inputs, settings or code", last_path
            )
    loss_of = distributed.data_parallel(model)

    last_epoch = min(settings.epochs, settings.lr_decay_epochs or settings.epochs)
    for epoch in range(start_epoch, last_epoch + 1):
        if _epochs_since_best(history) >= settings.patience:
            break
        # A function of the epoch alone (no LR scheduler): a resumed run needs no scheduler state.
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(settings, epoch)
        generator = torch.Generator().manual_seed(settings.seed * 100_003 + epoch)
        torch.manual_seed(settings.seed * 100_003 + epoch)  # dropout
        started = time.perf_counter()
        model.train()
        # Summed on the device and read now and then: reading a loss waits for the GPU.
        total, batches = torch.zeros((), device=target), 0
        bar = progress(
            model.training_batches(data, settings.batch_size, generator),
            desc=f"epoch {epoch}/{last_epoch}",
        )
        for batch in bar:
            part, weight = distributed.batch_share(batch)
            part = distributed.to_device(part, target)
            optimizer.zero_grad(set_to_none=True)
            with precision:
                loss = loss_of(part) * weight
            loss.backward()
            optimizer.step()
            total, batches = total + loss.detach(), batches + 1
            if batches % 50 == 0:
                bar.set_postfix(loss=f"{total.item() / batches:.4f}", refresh=False)
        # The ranks' weighted losses: the batches' means.
        total = distributed.average(total.item())
        train_seconds = time.perf_counter() - started
        model.eval()
        metrics = distributed.from_main(validate(model))
        score = metrics[settings.metric]
        improved = score > best
        if improved:
            best = score
            if distributed.is_main():
                with atomic_path(best_path) as tmp:
                    torch.save(model.state_dict(), tmp)
        history.append(
            {
                "epoch": epoch,
                "loss": total / max(batches, 1),
                "train_seconds": round(train_seconds, 3),
                "val": metrics,
                "best": improved,
            }
        )
        log.info(
            "epoch %d: loss %.4f, val %s %.4f%s (%.1fs)",
            epoch,
            total / max(batches, 1),
            settings.metric,
            score,
            " (best)" if improved else "",
            train_seconds,
        )
        if distributed.is_main():
            with atomic_path(last_path) as tmp:
                torch.save(
                    {
                        "fingerprint": fingerprint,
                        "epoch": epoch,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "history": history,
                        "best": best,
                    },
                    tmp,
                )

    distributed.barrier()  # best.pt is written
    if best_path.exists():
        model.load_state_dict(torch.load(best_path, map_location="cpu", weights_only=True))
    model.eval()
    return history


def learning_rate(settings: TrainSettings, epoch: int) -> float:
    """The learning rate of ``epoch`` (1-based): constant, or decaying linearly per epoch."""
    if settings.lr_decay_epochs is None:
        return settings.lr
    return settings.lr * (1 - (epoch - 1) / settings.lr_decay_epochs)


def uses_bf16(model: Recommender, settings: TrainSettings, target: torch.device) -> bool:
    """Whether training steps autocast to bf16: on a GPU, where the settings and the method
    allow it."""
    return target.type == "cuda" and settings.precision == "bf16" and model.mixed_precision


def mixed_precision(
    model: Recommender, settings: TrainSettings, target: torch.device
) -> AbstractContextManager:
    """The autocast of a training step (see :func:`uses_bf16`); on a GPU, TF32 matrix products
    too unless the settings say ``precision: fp32``."""
    if target.type == "cuda":  # "high": TF32 matrix products
        torch.set_float32_matmul_precision("high" if settings.precision == "bf16" else "highest")
    enabled = uses_bf16(model, settings, target)
    return torch.autocast(target.type, dtype=torch.bfloat16, enabled=enabled)


def _epochs_since_best(history: list[dict]) -> int:
    best_epochs = [h["epoch"] for h in history if h["best"]]
    if not history or not best_epochs:
        return len(history)
    return history[-1]["epoch"] - best_epochs[-1]
