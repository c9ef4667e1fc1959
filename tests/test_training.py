"""The shared training loop: early stopping, the best checkpoint, resuming, determinism."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DEMO_SPEC, tiny_model

from seqrerank import distributed
from seqrerank.data.dataset import SequenceData
from seqrerank.data.prepare import prepare_dataset
from seqrerank.evaluation import evaluate, retrieve
from seqrerank.methods.base import Recommender
from seqrerank.model_files import build_model
from seqrerank.pipeline import RerankCandidates, write_ground_truth
from seqrerank.pipeline import train as train_method
from seqrerank.training import TrainSettings, fit, learning_rate, mixed_precision, uses_bf16

SMALL_LRUREC = {"hidden": 16, "blocks": 1, "dropout": 0.2, "max_len": 10}
SETTINGS = TrainSettings(epochs=4, lr=2e-3, batch_size=64, patience=10, seed=7)


class Interrupted(Exception):
    """Stands for the job being killed part-way through an epoch."""


@pytest.fixture(scope="module")
def tiny_data() -> SequenceData:
    """40 users with random sequences over 30 items: an epoch takes milliseconds."""
    rng = np.random.default_rng(0)
    train = [rng.integers(1, 31, size=rng.integers(3, 9)) for _ in range(40)]
    return SequenceData(30, train, rng.integers(1, 31, 40), rng.integers(1, 31, 40))


def new_model(data: SequenceData, seed: int = SETTINGS.seed) -> Recommender:
    return build_model("lrurec", data, SMALL_LRUREC, seed)


def weights(model: Recommender) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in epoch.items() if k != "train_seconds"} for epoch in history]


@dataclass
class ScriptedValidation:
    """A validation callback returning fixed scores epoch by epoch, keeping each epoch's
    weights: the loop's decisions can then be checked against a known metric curve."""

    scores: list[float]
    metric: str = "ndcg@10"

    def __post_init__(self) -> None:
        self.snapshots: list[dict[str, torch.Tensor]] = []

    def __call__(self, model: Recommender) -> dict[str, float]:
        self.snapshots.append(weights(model))
        return {self.metric: self.scores[len(self.snapshots) - 1]}


class CountingValidation:
    """Full-ranking validation on val, as the workflow does; counts its calls and can
    interrupt the run at a given call."""

    def __init__(self, data: SequenceData, interrupt_at: int | None = None) -> None:
        self.data, self.interrupt_at, self.calls = data, interrupt_at, 0

    def __call__(self, model: Recommender) -> dict[str, float]:
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise Interrupted(f"interrupted in epoch {self.calls}")
        return evaluate(retrieve(model, self.data, "val", top_k=20))


# --- early stopping and the best epoch ------------------------------------------------------


def test_training_stops_after_patience_epochs_without_improvement(
    tiny_data: SequenceData, tmp_path: Path
) -> None:
    # Best at epoch 2; epochs 3-5 do not improve (matching the best is no improvement).
    validate = ScriptedValidation([0.1, 0.3, 0.2, 0.25, 0.3, 0.9, 0.9, 0.9])
    settings = replace(SETTINGS, epochs=8, patience=3)
    history = fit(new_model(tiny_data), tiny_data, settings, tmp_path, validate)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5]
    assert [h["best"] for h in history] == [True, True, False, False, False]
    assert len(validate.snapshots) == 5


def test_training_runs_all_epochs_while_it_keeps_improving(
    tiny_data: SequenceData, tmp_path: Path
) -> None:
    validate = ScriptedValidation([0.1, 0.2, 0.3, 0.4])
    history = fit(
        new_model(tiny_data), tiny_data, replace(SETTINGS, patience=1), tmp_path, validate
    )
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]


def test_training_leaves_the_model_with_the_best_epochs_weights(
    tiny_data: SequenceData, tmp_path: Path
) -> None:
    validate = ScriptedValidation([0.1, 0.5, 0.2, 0.3])
    model = new_model(tiny_data)
    fit(model, tiny_data, SETTINGS, tmp_path, validate)
    assert same_weights(weights(model), validate.snapshots[1])
    assert not same_weights(weights(model), validate.snapshots[-1])
    assert not model.training


def test_early_stopping_follows_the_configured_metric(
    tiny_data: SequenceData, tmp_path: Path
) -> None:
    validate = ScriptedValidation([0.5, 0.1, 0.1], metric="recall@5")
    settings = replace(SETTINGS, epochs=3, patience=1, metric="recall@5")
    history = fit(new_model(tiny_data), tiny_data, settings, tmp_path, validate)
    assert [h["best"] for h in history] == [True, False]


# --- resuming and determinism -----------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    history: list[dict]
    weights: dict[str, torch.Tensor]


def train_once(
    data: SequenceData, checkpoint_dir: Path, validate: Callable, settings: TrainSettings = SETTINGS
) -> Run:
    model = new_model(data, settings.seed)
    history = fit(model, data, settings, checkpoint_dir, validate)
    return Run(history, weights(model))


@pytest.fixture(scope="module")
def uninterrupted(demo_data: SequenceData, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Four epochs of a small LRURec on the demo data, in one go."""
    checkpoints = tmp_path_factory.mktemp("uninterrupted")
    return train_once(demo_data, checkpoints, CountingValidation(demo_data))


def test_validation_metrics_change_over_the_epochs(uninterrupted: Run) -> None:
    """Makes the comparisons below meaningful: each epoch's metrics differ."""
    scores = [h["val"]["ndcg@10"] for h in uninterrupted.history]
    assert len(scores) == 4 and len(set(scores)) == 4


def test_resumed_training_matches_uninterrupted_training(
    demo_data: SequenceData, uninterrupted: Run, tmp_path: Path
) -> None:
    with pytest.raises(Interrupted):
        train_once(demo_data, tmp_path, CountingValidation(demo_data, interrupt_at=3))
    validate = CountingValidation(demo_data)
    resumed = train_once(demo_data, tmp_path, validate)
    assert validate.calls == 2  # only epochs 3 and 4 were trained again
    assert without_timing(resumed.history) == without_timing(uninterrupted.history)
    assert same_weights(resumed.weights, uninterrupted.weights)


def test_finished_training_is_not_repeated(
    demo_data: SequenceData, uninterrupted: Run, tmp_path: Path
) -> None:
    train_once(demo_data, tmp_path, CountingValidation(demo_data))
    validate = CountingValidation(demo_data)
    again = train_once(demo_data, tmp_path, validate)
    assert validate.calls == 0
    assert without_timing(again.history) == without_timing(uninterrupted.history)
    assert same_weights(again.weights, uninterrupted.weights)


def test_a_checkpoint_of_other_settings_is_not_resumed(
    tiny_data: SequenceData, tmp_path: Path
) -> None:
    with pytest.raises(Interrupted):
        train_once(tiny_data, tmp_path, CountingValidation(tiny_data, interrupt_at=3))
    validate = CountingValidation(tiny_data)
    run = train_once(tiny_data, tmp_path, validate, replace(SETTINGS, lr=1e-3))
    assert validate.calls == SETTINGS.epochs
    assert [h["epoch"] for h in run.history] == [1, 2, 3, 4]


def test_a_longer_budget_continues_a_finished_run(
    demo_data: SequenceData, uninterrupted: Run, tmp_path: Path
) -> None:
    """More epochs (or more patience) train on from the checkpoint, as a fresh run would."""
    shorter = replace(SETTINGS, epochs=SETTINGS.epochs - 1)
    train_once(demo_data, tmp_path, CountingValidation(demo_data), shorter)
    validate = CountingValidation(demo_data)
    run = train_once(demo_data, tmp_path, validate)
    assert validate.calls == 1  # only the last epoch
    assert without_timing(run.history) == without_timing(uninterrupted.history)
    assert same_weights(run.weights, uninterrupted.weights)


def test_a_shorter_budget_than_the_checkpoint_starts_over(
    tiny_data: SequenceData, tmp_path: Path
) -> None:
    train_once(tiny_data, tmp_path, CountingValidation(tiny_data))
    validate = CountingValidation(tiny_data)
    run = train_once(tiny_data, tmp_path, validate, replace(SETTINGS, epochs=2))
    assert validate.calls == 2
    assert [h["epoch"] for h in run.history] == [1, 2]


def test_two_runs_with_the_same_seed_are_identical(
    demo_data: SequenceData, uninterrupted: Run, tmp_path: Path
) -> None:
    run = train_once(demo_data, tmp_path, CountingValidation(demo_data))
    assert without_timing(run.history) == without_timing(uninterrupted.history)
    assert same_weights(run.weights, uninterrupted.weights)


def test_runs_with_different_seeds_differ(tiny_data: SequenceData, tmp_path: Path) -> None:
    first = train_once(tiny_data, tmp_path / "a", CountingValidation(tiny_data))
    second = train_once(
        tiny_data, tmp_path / "b", CountingValidation(tiny_data), replace(SETTINGS, seed=8)
    )
    assert not same_weights(first.weights, second.weights)


# --- a checkpoint belongs to its inputs ---------------------------------------------------------


def test_a_checkpoint_of_other_inputs_is_not_resumed(
    tiny_data: SequenceData, tmp_path: Path
) -> None:
    model = new_model(tiny_data)
    with pytest.raises(Interrupted):
        fit(model, tiny_data, SETTINGS, tmp_path, CountingValidation(tiny_data, 3), "data v1")
    validate = CountingValidation(tiny_data)
    fit(new_model(tiny_data), tiny_data, SETTINGS, tmp_path, validate, "data v2")
    assert validate.calls == SETTINGS.epochs
    validate = CountingValidation(tiny_data)
    fit(new_model(tiny_data), tiny_data, SETTINGS, tmp_path, validate, "data v2")
    assert validate.calls == 0  # the same inputs again: the finished run is reused


def edited_model_class(folder: Path, comment: str) -> type[Recommender]:
    """A method defined in its own file (a subclass of LRURec), imported afresh."""
    path = folder / "edited_method.py"
    path.write_text(
        f"# {comment}\nfrom seqrerank.methods.lrurec import LRURec\n\nclass Edited(LRURec):\n"
        "    pass\n"
    )
    spec = importlib.util.spec_from_file_location("edited_method", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # where inspect looks for a class's file
    spec.loader.exec_module(module)
    return module.Edited


def test_an_edited_model_file_starts_over(tiny_data: SequenceData, tmp_path: Path) -> None:
    def train(cls: type[Recommender], validate: CountingValidation) -> None:
        torch.manual_seed(SETTINGS.seed)
        model = cls(num_items=tiny_data.num_items, **SMALL_LRUREC)
        fit(model, tiny_data, SETTINGS, tmp_path / "checkpoints", validate)

    original = edited_model_class(tmp_path, "version 1")
    with pytest.raises(Interrupted):
        train(original, CountingValidation(tiny_data, interrupt_at=3))
    validate = CountingValidation(tiny_data)
    train(edited_model_class(tmp_path, "version 1"), validate)
    assert validate.calls == 2  # the same code resumes after epoch 2
    validate = CountingValidation(tiny_data)
    train(edited_model_class(tmp_path, "version 2"), validate)
    assert validate.calls == SETTINGS.epochs


def prepared_demo(folder: Path, **changes) -> Path:
    spec = {**DEMO_SPEC, "synthetic": {"num_users": 120}, **changes}
    prepare_dataset(spec, folder / "raw", folder / "data")
    return folder / "data"


def test_a_retriever_on_changed_data_trains_from_scratch(tmp_path: Path) -> None:
    """The reproduction of a stale model: the same job on data prepared with another
    min_rating, its checkpoints left in place, must not export the old data's model."""
    settings = replace(SETTINGS, epochs=2)
    checkpoints = tmp_path / "checkpoints"
    before = prepared_demo(tmp_path / "before", min_rating=0)
    first, _, first_history = train_method("lrurec", before, SMALL_LRUREC, settings, checkpoints)
    after = prepared_demo(tmp_path / "after", min_rating=2)
    second, data, history = train_method("lrurec", after, SMALL_LRUREC, settings, checkpoints)
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[0]["val"] != first_history[0]["val"]
    assert first.item_embedding.weight.shape != second.item_embedding.weight.shape or not (
        same_weights(weights(first), weights(second))
    )
    _, _, again = train_method("lrurec", after, SMALL_LRUREC, settings, checkpoints)
    assert without_timing(again) == without_timing(history)  # reused, not retrained


@pytest.mark.usefixtures("tiny_models")
def test_a_reranker_on_changed_candidates_trains_from_scratch(tmp_path: Path) -> None:
    data_dir = prepared_demo(tmp_path)
    params = {"model_name": tiny_model("qwen3"), "max_history": 3, "max_item_tokens": 6}
    params |= {"max_candidates": 10, "train_users_per_epoch": 32}
    settings = TrainSettings(epochs=1, lr=1e-3, batch_size=16, patience=1, seed=0)
    histories = []
    for seed in (1, 1, 2):  # the same lists twice, then other lists
        lists = tmp_path / f"candidates{seed}.csv"
        write_ground_truth(data_dir, num_negatives=9, seed=seed, out_path=lists)
        candidates = RerankCandidates(training=lists, validation=lists, top_k=10)
        _, _, history = train_method(
            "qwen", data_dir, params, settings, tmp_path / "checkpoints", candidates=candidates
        )
        histories.append(without_timing(history))
    assert histories[0] == histories[1]  # resumed: the finished run is reused
    assert [h["epoch"] for h in histories[2]] == [1]
    assert histories[2][0]["val"] != histories[0][0]["val"]


SMALL_BERT4REC = {"hidden": 32, "layers": 2, "heads": 2, "dropout": 0.2, "max_len": 20}


def test_bert4rec_interrupted_then_continued_under_a_longer_budget_equals_one_run(
    demo_data: SequenceData, tmp_path: Path
) -> None:
    """BERT4Rec (random masks, dropout in attention) resumed twice, once after a kill and once
    under a longer budget, ends exactly where one uninterrupted run does."""

    def train(checkpoints: Path, validate: Callable, epochs: int) -> Run:
        model = build_model("bert4rec", demo_data, SMALL_BERT4REC, SETTINGS.seed)
        history = fit(model, demo_data, replace(SETTINGS, epochs=epochs), checkpoints, validate)
        return Run(history, weights(model))

    whole = train(tmp_path / "whole", CountingValidation(demo_data), epochs=4)
    with pytest.raises(Interrupted):
        train(tmp_path / "parts", CountingValidation(demo_data, interrupt_at=2), epochs=3)
    train(tmp_path / "parts", CountingValidation(demo_data), epochs=3)
    validate = CountingValidation(demo_data)
    continued = train(tmp_path / "parts", validate, epochs=4)
    assert validate.calls == 1
    assert without_timing(continued.history) == without_timing(whole.history)
    assert same_weights(continued.weights, whole.weights)


# --- learning-rate decay ------------------------------------------------------------------------


def test_a_decaying_learning_rate_falls_linearly_and_training_ends_with_it(
    tiny_data: SequenceData, tmp_path: Path
) -> None:
    settings = replace(SETTINGS, epochs=8, lr_decay_epochs=4)
    assert [learning_rate(settings, e) for e in (1, 2, 3, 4)] == pytest.approx(
        [2e-3, 1.5e-3, 1e-3, 0.5e-3]
    )
    assert learning_rate(SETTINGS, 3) == SETTINGS.lr
    history = fit(new_model(tiny_data), tiny_data, settings, tmp_path / "decay", improving())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    constant = train_once(tiny_data, tmp_path / "constant", improving())
    decayed = train_once(tiny_data, tmp_path / "decayed", improving(), replace(settings, epochs=4))
    assert not same_weights(decayed.weights, constant.weights)


def test_a_decaying_run_resumed_after_a_kill_equals_one_run(
    demo_data: SequenceData, tmp_path: Path
) -> None:
    settings = replace(SETTINGS, lr_decay_epochs=4)
    whole = train_once(demo_data, tmp_path / "whole", CountingValidation(demo_data), settings)
    with pytest.raises(Interrupted):
        validate = CountingValidation(demo_data, interrupt_at=3)
        train_once(demo_data, tmp_path / "parts", validate, settings)
    resumed = train_once(demo_data, tmp_path / "parts", CountingValidation(demo_data), settings)
    assert without_timing(resumed.history) == without_timing(whole.history)
    assert same_weights(resumed.weights, whole.weights)


def improving() -> ScriptedValidation:
    return ScriptedValidation([0.1 * epoch for epoch in range(1, 9)])


# --- device placement ---------------------------------------------------------------------------


def test_batches_go_to_the_device_with_whatever_is_not_a_tensor_left_alone() -> None:
    meta = torch.device("meta")  # a device every machine has: tensors with shapes, no data
    batch = ([torch.zeros(2), "a prompt"], torch.ones(3, dtype=torch.long), {"ids": torch.zeros(1)})
    moved = distributed.to_device(batch, meta)
    assert moved[0][0].device == meta and moved[0][1] == "a prompt"
    assert moved[1].device == meta and moved[1].dtype == torch.long
    assert moved[2]["ids"].device == meta
    assert isinstance(moved, tuple) and isinstance(moved[0], list)


def test_the_model_is_placed_on_the_jobs_device_once(
    tiny_data: SequenceData, monkeypatch: pytest.MonkeyPatch
) -> None:
    meta = torch.device("meta")
    monkeypatch.setattr(distributed, "device", lambda: meta)
    model = new_model(tiny_data)
    assert distributed.place(model) == meta
    assert {p.device for p in [*model.parameters(), *model.buffers()]} == {meta}
    moves = []
    monkeypatch.setattr(model, "to", lambda *args: moves.append(args))
    distributed.place(model)
    assert moves == []  # already there (as an LLM its loader put on the GPU): left alone


@pytest.mark.parametrize(
    ("device", "precision", "allowed", "bf16"),
    [
        ("cuda", "bf16", True, True),
        ("cuda", "fp32", True, False),
        ("cuda", "bf16", False, False),
        ("cpu", "bf16", True, False),
    ],
)
def test_training_autocasts_to_bf16_only_on_a_gpu_where_allowed(
    tiny_data: SequenceData, device: str, precision: str, allowed: bool, bf16: bool
) -> None:
    model = new_model(tiny_data)
    model.mixed_precision = allowed
    settings = replace(SETTINGS, precision=precision)
    assert uses_bf16(model, settings, torch.device(device)) == bf16
    before = torch.get_float32_matmul_precision()
    try:
        mixed_precision(model, settings, torch.device(device))
        tf32 = torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)
    assert tf32 == (device == "cuda" and precision == "bf16")


def test_training_on_a_cpu_runs_in_fp32(tiny_data: SequenceData) -> None:
    autocast = mixed_precision(new_model(tiny_data), SETTINGS, torch.device("cpu"))
    with autocast:
        assert not torch.is_autocast_enabled("cpu")
