"""The LLM rerankers on tiny random-weight models with the real Qwen tokenizer (offline):
index labels, prompts, verbalizer scoring, LoRA training, the Qwen3-VL modes, the adapter-only
checkpoints, and the vLLM backend where it is installed."""

from __future__ import annotations

import importlib.util
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, build, load, tiny_model

from seqrerank.candidates import CandidateTraining, RankedLists, sample_ground_truth
from seqrerank.config import validate_config
from seqrerank.data.dataset import SequenceData
from seqrerank.evaluation import by_length, evaluate, rerank
from seqrerank.llm.prompts import label_names
from seqrerank.llm.tiny import qwen_tokenizer
from seqrerank.methods.llm_reranker import LLMReranker
from seqrerank.metrics import target_ranks
from seqrerank.model_files import save_model
from seqrerank.report.base_models import base_models
from seqrerank.training import TrainSettings, fit

TINY = {
    "model_name": tiny_model("qwen3"),
    "max_history": 5,
    "max_item_tokens": 8,
    "score_batch_size": 16,
}
VISION_MODES = ("raw_image", "caption", "semantic_summary", "semantic_summary_small")


pytestmark = pytest.mark.usefixtures("tiny_models")


@pytest.fixture(scope="module")
def tokenizer():
    return qwen_tokenizer()


@pytest.fixture(scope="module")
def demo_with_texts(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo dataset plus the caption and summary tables the text modes read (written here
    directly; their generation is tested in test_item_text.py)."""
    out = tmp_path_factory.mktemp("demo_texts")
    for path in demo_dir.iterdir():
        (out / path.name).symlink_to(path)
    items = pd.read_csv(demo_dir / "items.csv")
    for column, name in [
        ("caption", "captions.csv"),
        ("semantic_summary", "semantic_summaries.csv"),
        ("semantic_summary_small", "semantic_summaries_small.csv"),
    ]:
        texts = [f"{column} {i}" for i in items["item_id"]]
        pd.DataFrame({"item_id": items["item_id"], column: texts}).to_csv(out / name, index=False)
    return out


@pytest.fixture(scope="module")
def qwen(demo_data: SequenceData, demo_dir: Path) -> LLMReranker:
    return build("qwen", demo_data, demo_dir, {**TINY, "max_candidates": 60}, seed=0)


def full_forward_label_logits(model: LLMReranker, text: str, count: int) -> torch.Tensor:
    """The label tokens' logits read off the ordinary full-vocabulary forward pass of the
    prompt's text, tokenized as a whole."""
    ids = torch.tensor([model.tokenizer.encode(text)])
    with torch.inference_mode():
        logits = model.llm(input_ids=ids).logits[0, -1]
    return logits[model.prompts.labels[:count]]


# ---- labels and prompts -----------------------------------------------------------------------


def test_labels_are_distinct_single_tokens_well_beyond_26(tokenizer) -> None:
    names = label_names(tokenizer, 200)
    assert names[:3] == ["A", "B", "C"] and names[26] == "AA"
    ids = [tokenizer.encode(name, add_special_tokens=False) for name in names]
    assert all(len(i) == 1 for i in ids)
    assert len({i[0] for i in ids}) == 200


def test_asking_for_more_labels_than_the_tokenizer_has_names_the_limit(tokenizer) -> None:
    with pytest.raises(ValueError, match=r"only 578 single-token index labels.*max_candidates"):
        label_names(tokenizer, 1000)


def test_prompt_ids_equal_the_tokenized_prompt_text(qwen: LLMReranker, demo_data) -> None:
    prompt = qwen.prompts.build(demo_data.inputs("val")[0], np.arange(1, 41))
    text = qwen.tokenizer.decode(prompt.ids)
    assert qwen.tokenizer.encode(text) == prompt.ids
    assert "Candidate pool:\nA. " in text and "\nAN. " in text  # the 40th label
    assert text.endswith("<|im_start|>assistant\n")
    history = text.split("User history:\n")[1].split("Candidate pool:")[0]
    assert history.count("\n- ") + history.startswith("- ") == 5  # max_history


# ---- verbalizer scoring -----------------------------------------------------------------------


def test_verbalizer_scores_equal_the_label_token_logits_for_60_candidates(
    qwen: LLMReranker, demo_data: SequenceData
) -> None:
    histories = torch.tensor(np.stack([demo_data.inputs("val")[u][-5:] for u in (0, 1)]))
    candidates = torch.stack([torch.randperm(demo_data.num_items)[:60] + 1 for _ in range(2)])
    with torch.inference_mode():
        scores = qwen.score_candidates(torch.tensor([1, 2]), histories, candidates)
    for row in range(2):
        prompt = qwen.prompts.build(histories[row].tolist(), candidates[row].tolist())
        expected = full_forward_label_logits(qwen, qwen.tokenizer.decode(prompt.ids), 60)
        torch.testing.assert_close(scores[row], expected, rtol=1e-4, atol=1e-4)


def test_more_than_26_candidates_are_ranked_by_their_label_logits(
    qwen: LLMReranker, demo_data: SequenceData
) -> None:
    """Reranking 60 candidates orders them exactly by their labels' logits, the 27th to 60th
    (two-letter labels) included."""
    lists = sample_ground_truth(demo_data, "val", 59, seed=3)
    lists = RankedLists(
        "val", lists.users[:3], lists.targets[:3], lists.items[:3], lists.scores[:3]
    )
    reranked = rerank(qwen, demo_data, lists)
    for row in range(3):
        prompt = qwen.prompts.build(demo_data.inputs("val")[row], lists.items[row])
        logits = full_forward_label_logits(qwen, qwen.tokenizer.decode(prompt.ids), 60)
        expected = lists.items[row][torch.argsort(logits, descending=True, stable=True).numpy()]
        np.testing.assert_array_equal(reranked.items[row], expected)


def test_candidates_beyond_max_candidates_keep_their_order_below_the_scored_ones(
    demo_data: SequenceData, demo_dir: Path
) -> None:
    model = build("qwen", demo_data, demo_dir, {**TINY, "max_candidates": 4}, seed=0)
    candidates = torch.tensor([[5, 6, 7, 8, 9, 10, 0]])
    histories = torch.as_tensor(demo_data.inputs("val")[0][-5:])[None]
    with torch.inference_mode():
        scores = model.score_candidates(torch.tensor([1]), histories, candidates)
    assert torch.isfinite(scores[0, :4]).all()
    assert torch.isinf(scores[0, 4:]).all()


# ---- training ---------------------------------------------------------------------------------


def test_lora_steps_lower_the_answer_loss_and_touch_only_the_adapter(
    demo_data: SequenceData, demo_dir: Path
) -> None:
    """Gradient steps on one batch of demo ground-truth examples drive the loss of their
    answer labels down from log(20) (uniform over the pool of 20): the verbalizer loss reaches
    the adapter, and nothing else moves. (A random tiny model does not learn the demo's
    sequential signal in a test-sized budget, so validation NDCG is not asserted here.)"""
    model = build("qwen", demo_data, demo_dir, {**TINY, "max_candidates": 20}, seed=0)
    train = CandidateTraining(demo_data, sample_ground_truth(demo_data, "train", 19, seed=42))
    batch = next(model.training_batches(train, 16, torch.Generator().manual_seed(0)))
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = model.loss(batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert abs(losses[0] - np.log(20)) < 0.1
    assert losses[-1] < losses[0] - 0.2, losses
    assert sum(b < a for a, b in itertools.pairwise(losses)) >= 12  # falling step after step
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)


def test_fit_trains_on_candidates_and_validates_by_reranking(
    demo_data: SequenceData, demo_dir: Path, tmp_path: Path
) -> None:
    """The shared loop with a candidate-trained reranker: one epoch on 64 users, validation
    on every user's val candidates, the best adapter kept and resumable."""
    params = {**TINY, "max_candidates": 20, "train_users_per_epoch": 64}
    model = build("qwen", demo_data, demo_dir, params, seed=0)
    train = CandidateTraining(demo_data, sample_ground_truth(demo_data, "train", 19, seed=42))
    val = sample_ground_truth(demo_data, "val", 19, seed=42)
    settings = TrainSettings(epochs=1, lr=1e-3, batch_size=16, patience=1, seed=0)
    history = fit(model, train, settings, tmp_path, lambda m: evaluate(rerank(m, demo_data, val)))
    assert len(history) == 1 and history[0]["best"]
    assert 0 < history[0]["val"]["ndcg@10"] < 1
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best.keys() == model.state_dict().keys()
    assert all("lora_" in name for name in best)


def test_only_the_adapter_trains_and_is_saved(
    qwen: LLMReranker, demo_data: SequenceData, demo_dir: Path, tmp_path: Path
) -> None:
    trainable = {n for n, p in qwen.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    with torch.no_grad():  # a trained adapter: LoRA's B starts at zero
        for name, parameter in qwen.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.01)
    state = {name: value.clone() for name, value in qwen.state_dict().items()}
    assert state and all("lora_" in name for name in state)
    path = tmp_path / "model.pt"
    save_model(qwen, "qwen", {**TINY, "max_candidates": 60}, path)
    assert path.stat().st_size < 1_000_000  # the 10M-parameter base model is not in it
    reloaded = load(path, demo_data, demo_dir)
    assert all(torch.equal(value, reloaded.state_dict()[name]) for name, value in state.items())


def test_training_examples_hold_the_target_once_at_a_shuffled_position(
    demo_data: SequenceData,
) -> None:
    train = CandidateTraining(demo_data, sample_ground_truth(demo_data, "train", 19, seed=1))
    examples = train.examples(8, torch.Generator().manual_seed(0))
    targets = demo_data.targets("train")
    positions = []
    for (_, candidates, answer), target in zip(examples, targets, strict=True):
        assert len(candidates) == 8 and candidates[answer] == target
        assert (candidates == target).sum() == 1
        positions.append(answer)
    assert len(set(positions)) == 8  # every position is used


# ---- Qwen3-VL ---------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=VISION_MODES)
def vision_model(request, demo_data: SequenceData, demo_with_texts: Path) -> LLMReranker:
    params = {**TINY, "model_name": tiny_model("qwen3vl"), "max_item_tokens": 32}
    return build(f"qwen3vl_{request.param}", demo_data, demo_with_texts, params, seed=0)


def test_each_qwen3vl_mode_builds_its_own_prompt(
    vision_model: LLMReranker, demo_data: SequenceData
) -> None:
    model = vision_model
    mode = type(model).item_column or "raw_image"
    history, candidates = demo_data.inputs("val")[0], np.arange(1, 31)
    prompt = model.prompts.build(history, candidates)
    text = model.tokenizer.decode(prompt.ids)
    image_pad = model.llm.config.image_token_id
    if mode == "raw_image":
        assert len(prompt.images) == 5 + 30  # one image per history item and candidate
        assert text.count("<|vision_start|>") == 35 and image_pad in prompt.ids
    else:
        assert prompt.images == [] and image_pad not in prompt.ids
        assert f"{mode} " in text  # the mode's item text, e.g. "caption 12"
    assert not any(f"{other} " in text for other in VISION_MODES[1:] if other != mode)
    with torch.inference_mode():
        scores = model.score_candidates(
            torch.tensor([1]), torch.tensor([history]), torch.tensor([candidates])
        )
    assert scores.shape == (1, 30) and torch.isfinite(scores).all()


def test_a_text_mode_without_its_item_texts_says_which_rule_makes_them(
    demo_data: SequenceData, demo_dir: Path
) -> None:
    with pytest.raises(ValueError, match="no 'caption' column.*data rules"):
        build("qwen3vl_caption", demo_data, demo_dir, {**TINY, "model_name": tiny_model("qwen3vl")})


def test_vision_batches_pad_on_the_left_and_score_like_single_prompts(
    vision_model: LLMReranker, demo_data: SequenceData
) -> None:
    model = vision_model
    histories = [demo_data.inputs("val")[u] for u in (0, 1, 2)]
    pools = [np.arange(1, 21), np.arange(40, 45), np.arange(100, 130)]
    prompts = [model.prompts.build(h, p) for h, p in zip(histories, pools, strict=True)]
    inputs = model.model_inputs(prompts)
    assert (inputs["attention_mask"][:, -1] == 1).all()  # every prompt ends at the last column
    with torch.inference_mode():
        batched = model.label_logits(prompts, [len(p) for p in pools])
        for row, prompt in enumerate(prompts):
            alone = model.label_logits([prompt], [len(pools[row])])[0]
            torch.testing.assert_close(batched[row, : len(pools[row])], alone, rtol=1e-3, atol=1e-3)


# ---- vLLM -------------------------------------------------------------------------------------


def test_validation_while_training_scores_with_transformers(
    demo_data: SequenceData, demo_dir: Path
) -> None:
    """vLLM serves a merged copy of the weights: right for a trained model, wrong while the
    adapter still trains. Once training starts, scoring stays with transformers (here vLLM
    is not even installed, and nothing asks for it)."""
    params = {**TINY, "max_candidates": 20, "backend": "vllm"}
    model = build("qwen", demo_data, demo_dir, params, seed=0)
    train = CandidateTraining(demo_data, sample_ground_truth(demo_data, "train", 19, seed=42))
    next(model.training_batches(train, 4, torch.Generator().manual_seed(0)))
    val = sample_ground_truth(demo_data, "val", 19, seed=42)
    reranked = rerank(model, demo_data, val.head(20))
    assert np.isfinite(reranked.scores).all()


@pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None, reason="vLLM is not installed in this environment"
)
def test_vllm_and_transformers_backends_rank_alike(demo_data: SequenceData, demo_dir: Path) -> None:
    lists = sample_ground_truth(demo_data, "val", 19, seed=5)
    lists = RankedLists(
        "val", lists.users[:32], lists.targets[:32], lists.items[:32], lists.scores[:32]
    )
    ranked = {}
    for backend in ("transformers", "vllm"):
        model = build("qwen", demo_data, demo_dir, {**TINY, "backend": backend}, seed=0)
        ranked[backend] = rerank(model, demo_data, lists).items
    np.testing.assert_array_equal(ranked["transformers"], ranked["vllm"])


# ---- memorisation: the training path provably learns ------------------------------------------
#
# A random-weight base cannot learn the task itself in a test's budget (docs/llm-rerankers.md),
# but it can learn 32 fixed training lists by heart. That is enough to show that the loss, the
# label of each candidate, the answer position, the adapter's save and reload and the scoring
# path agree: a label misaligned with its candidate, a loss read at another position, an adapter
# that does not reload or a pool reordered between prompt and answer each fail these checks.

MEMORISED_LISTS = 32
MEMORISE = {
    "max_history": 3,
    "max_item_tokens": 6,
    "score_batch_size": 8,
    "lora_rank": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.0,
    "lora_target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
}
MEMORISE_SETTINGS = TrainSettings(
    epochs=40, lr=3e-3, batch_size=16, patience=40, metric="ndcg@5", seed=0
)
# Chance of a target ranked first is 1/pool size (1/20 to 1/40 here): about one list of 32. A
# control may rank at most this many targets first (binomial, 32 lists at 1/20: P(>= 6) < 1%).
CHANCE_FIRST = 5
OUTPUT_SCALE = 20.0


@dataclass(frozen=True)
class ListsInTheirOrder(CandidateTraining):
    """Each training list in its own order every epoch. Production draws a fresh order per
    epoch (tested above), so that no position gives the answer away; finding an item's label
    in a reshuffled pool is an induction skill a random-weight base does not learn in a test's
    budget, whereas a fixed prompt's answer can be learned by heart."""

    def examples(
        self, size: int, generator: torch.Generator
    ) -> list[tuple[np.ndarray, np.ndarray, int]]:
        inputs = self.data.inputs("train")
        out = []
        for user, target, row in zip(
            self.lists.users, self.lists.targets, self.lists.items, strict=True
        ):
            pool = row[row > 0][:size]
            out.append((inputs[user - 1], pool, int(np.flatnonzero(pool == target)[0])))
        return out


def confident_copy(kind: str, out: Path) -> str:
    """The tiny checkpoint of ``kind`` with its final norm's weight scaled by ``OUTPUT_SCALE``.
    The tiny models' frozen final norm and output rows (std 0.02, hidden 32) cap every logit at
    about 0.6, so no adapter can make an answer confident (the loss stays above 2 for 20
    candidates); a real Qwen's logits span tens of units."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor

    source = tiny_model(kind)
    vision = kind == "qwen3vl"
    model = (AutoModelForImageTextToText if vision else AutoModelForCausalLM).from_pretrained(
        source
    )
    norm = model.model.language_model.norm if vision else model.model.norm
    with torch.no_grad():
        norm.weight.mul_(OUTPUT_SCALE)
    model.save_pretrained(out)
    AutoProcessor.from_pretrained(source).save_pretrained(out)
    return str(out)


def mixed_lists(data: SequenceData, sizes: list[int], seed: int = 42) -> RankedLists:
    """Ground-truth lists of the ``train`` task for the first ``len(sizes)`` users, list ``u``
    cut to ``sizes[u]`` candidates (the target kept, the rest padded with 0)."""
    full = sample_ground_truth(data, "train", max(sizes) - 1, seed).first_users(len(sizes))
    items = np.zeros_like(full.items)
    for row, (candidates, target, size) in enumerate(
        zip(full.items, full.targets, sizes, strict=True)
    ):
        negatives_kept = np.cumsum(candidates != target) <= size - 1
        items[row, :size] = candidates[(candidates == target) | negatives_kept]
    return RankedLists("train", full.users, full.targets, items, full.scores)


def relabelled(lists: RankedLists, how: str) -> RankedLists:
    """The lists with another candidate as each answer (controls): ``shifted``, the candidate
    after the target (a label off by one); ``shuffled``, the answer position of the next list
    (answers shuffled against the prompts, same positions overall)."""
    sizes = (lists.items > 0).sum(axis=1)
    positions = (lists.items == lists.targets[:, None]).argmax(axis=1)
    if how == "shifted":
        positions = (positions + 1) % sizes
    elif how == "shuffled":
        positions = np.roll(positions, -1) % sizes
    targets = lists.items[np.arange(len(lists)), positions]
    return RankedLists(lists.split, lists.users, targets, lists.items, lists.scores)


def ranked_first(model: LLMReranker, data: SequenceData, lists: RankedLists) -> dict[str, int]:
    """How many targets each scoring path ranks first: ``batched``, the workflow's rerank step
    (``score_batch_size`` prompts at once, left padding, mixed pool sizes); ``one_by_one``, the
    full-vocabulary forward pass of each prompt alone, its label logits read off."""
    batched = target_ranks(rerank(model, data, lists).items, lists.targets) == 1
    inputs = data.inputs(lists.split)
    alone = 0
    with torch.inference_mode():
        for user, target, row in zip(lists.users, lists.targets, lists.items, strict=True):
            pool = row[row > 0]
            prompt = model.prompts.build(inputs[user - 1], pool)
            logits = model.llm(**model.model_inputs([prompt])).logits[0, -1]
            scores = logits[model.prompts.labels[: len(pool)]]
            alone += int(pool[int(scores.argmax())] == target)
    return {"batched": int(batched.sum()), "one_by_one": alone}


def memorise(
    method: str, data: SequenceData, data_dir: Path, params: dict, lists: RankedLists, out: Path
) -> tuple[list[dict], LLMReranker]:
    """Train an adapter with the shared loop on ``lists`` (in their order), validated on the
    same lists; save it as the workflow does and load it into a freshly built model."""
    model = build(method, data, data_dir, params, seed=0)
    history = fit(
        model,
        ListsInTheirOrder(data, lists),
        MEMORISE_SETTINGS,
        out / "checkpoints",
        lambda m: evaluate(rerank(m, data, lists)),
    )
    save_model(model, method, params, out / "model.pt")
    return history, load(out / "model.pt", data, data_dir)


@dataclass(frozen=True)
class Memorising:
    """A reranker's memorisation setup: its tiny model kind, the lists' pool sizes and the
    prompt settings."""

    kind: str
    pool_sizes: list[int]
    params: dict


MEMORISING = {
    # Pools of 20 to 40: two-letter labels from the 27th candidate on.
    "qwen": Memorising("qwen3", [20, 27, 33, 40] * 8, {}),
    # Every item titled alike (below), so that only the images tell the prompts apart.
    "qwen3vl_raw_image": Memorising("qwen3vl", [12, 20, 28, 30] * 8, {"max_history": 2}),
}
SAME_TITLE = "Product"


@pytest.fixture(scope="module")
def same_title_dir(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo dataset with one title for every item: each keeps its own image."""
    out = tmp_path_factory.mktemp("same_title")
    for path in demo_dir.iterdir():
        if path.name != "items.csv":
            (out / path.name).symlink_to(path)
    items = pd.read_csv(demo_dir / "items.csv")
    items["title"] = SAME_TITLE
    items.to_csv(out / "items.csv", index=False)
    return out


@pytest.fixture(scope="module")
def memorising(
    request, demo_data: SequenceData, demo_dir: Path, same_title_dir: Path, tmp_path_factory
) -> tuple[str, Path, dict, RankedLists]:
    """(method, dataset folder, model parameters, the 32 lists) of reranker ``request.param``."""
    method = request.param
    setup = MEMORISING[method]
    model_dir = tmp_path_factory.mktemp(f"confident-{setup.kind}")
    params = {
        **MEMORISE,
        "model_name": confident_copy(setup.kind, model_dir / "model"),
        "max_candidates": max(setup.pool_sizes),
        **setup.params,
    }
    data_dir = same_title_dir if method.startswith("qwen3vl") else demo_dir
    return method, data_dir, params, mixed_lists(demo_data, setup.pool_sizes)


@pytest.mark.parametrize("memorising", list(MEMORISING), indirect=True)
def test_lora_memorises_32_training_lists_and_ranks_each_target_first_after_reloading(
    memorising, demo_data: SequenceData, tmp_path: Path
) -> None:
    """The loss falls below a tenth of ln(pool size); the adapter, saved and loaded into a
    fresh model as the workflow does, ranks all 32 targets first, through the batched rerank
    step and one prompt at a time (and through vLLM where it is installed); the base model
    without the adapter does not."""
    method, data_dir, params, lists = memorising
    history, reloaded = memorise(method, demo_data, data_dir, params, lists, tmp_path)
    smallest_pool = min(MEMORISING[method].pool_sizes)
    assert history[-1]["loss"] < 0.1 * np.log(smallest_pool), [h["loss"] for h in history]
    # The rerank step's batches mix pool sizes (so prompt lengths and left padding too).
    histories = [demo_data.inputs("train")[user - 1] for user in lists.users]
    pool_sizes = (lists.items > 0).sum(axis=1)
    batches = by_length(histories, params["score_batch_size"])
    assert all(len(set(pool_sizes[rows])) > 1 for rows in batches)
    assert ranked_first(reloaded, demo_data, lists) == {"batched": 32, "one_by_one": 32}
    untrained = build(method, demo_data, data_dir, params, seed=0)
    assert ranked_first(untrained, demo_data, lists)["batched"] < MEMORISED_LISTS // 4
    if method == "qwen" and importlib.util.find_spec("vllm") is not None:
        save_model(reloaded, method, {**params, "backend": "vllm"}, tmp_path / "vllm.pt")
        served = load(tmp_path / "vllm.pt", demo_data, data_dir)
        assert ranked_first(served, demo_data, lists)["batched"] == MEMORISED_LISTS


@pytest.mark.parametrize("control", ["shuffled", "shifted"])
@pytest.mark.parametrize("memorising", list(MEMORISING), indirect=True)
def test_a_run_trained_on_wrong_answers_fails_the_check(
    memorising, control: str, demo_data: SequenceData, tmp_path: Path
) -> None:
    """Controls: trained on the answers shuffled against the prompts (each list answered at
    the next list's answer position), or on labels shifted by one, the adapter learns its
    answers just as well, and ranks the true targets first no more often than chance: the
    check can fail, and a bias towards the answers' positions does not pass it."""
    method, data_dir, params, lists = memorising
    wrong = relabelled(lists, control)
    assert (wrong.targets != lists.targets).sum() > MEMORISED_LISTS - CHANCE_FIRST
    history, reloaded = memorise(method, demo_data, data_dir, params, wrong, tmp_path)
    assert history[-1]["loss"] < 0.1 * np.log(min(MEMORISING[method].pool_sizes))
    first = ranked_first(reloaded, demo_data, lists)
    assert max(first.values()) <= CHANCE_FIRST, first


def test_qwen3vl_prompts_with_the_same_text_are_told_apart_by_their_images(
    same_title_dir: Path, demo_data: SequenceData
) -> None:
    """In the memorisation check of ``qwen3vl_raw_image`` every item has the same title, so
    the prompts of lists of one pool size are the same text, answered at different positions:
    ranking every target first (above) takes the images, which differ."""
    setup = MEMORISING["qwen3vl_raw_image"]
    params = {**TINY, **MEMORISE, "model_name": tiny_model("qwen3vl"), **setup.params}
    params["max_candidates"] = max(setup.pool_sizes)
    model = build("qwen3vl_raw_image", demo_data, same_title_dir, params, seed=0)
    lists = mixed_lists(demo_data, setup.pool_sizes)
    inputs = demo_data.inputs("train")
    for size in set(setup.pool_sizes):
        rows = [r for r, s in enumerate(setup.pool_sizes) if s == size]
        prompts = [model.prompts.build(inputs[r], lists.items[r][:size]) for r in rows]
        assert all(p.ids == prompts[0].ids for p in prompts)  # the same text
        assert len({tuple(p.images) for p in prompts}) == len(rows)  # other images
        answers = {int(np.flatnonzero(lists.items[r] == lists.targets[r])[0]) for r in rows}
        assert len(answers) > 1  # answered at different positions


# ---- the documented GPU run -------------------------------------------------------------------


def test_the_gpu_config_in_the_docs_is_valid_and_names_real_models() -> None:
    """docs/llm-rerankers.md's config for a real run validates (model keys included) and its
    rerankers rest on hub models, so none of its rows is marked random-weight."""
    docs = (REPO / "docs/llm-rerankers.md").read_text()
    block = docs.split("## A real run on a GPU node", 1)[1].split("```yaml\n", 1)[1]
    config = yaml.safe_load(block.split("```", 1)[0])
    validate_config(config, REPO / "config/schema.yaml", source="docs/llm-rerankers.md")
    models = base_models(config, random_weight_prefix="results/models/tiny-")
    assert models["qwen"]["base_model"] == "Qwen/Qwen2.5-7B-Instruct"
    assert models["qwen3vl_caption"]["text_model"] == "Salesforce/blip2-opt-2.7b"
    assert not any(model["random_weights"] for model in models.values())
    lora = config["methods"]["qwen"]["model"]
    assert (lora["lora_rank"], lora["lora_alpha"], lora["lora_dropout"]) == (8, 32, 0.05)
