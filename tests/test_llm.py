"""The LLM rerankers on tiny random-weight models with the real Qwen tokenizer (offline):
index labels, prompts, verbalizer scoring, LoRA training, the Qwen3-VL modes, the adapter-only
checkpoints, and the vLLM backend where it is installed."""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import build, load, tiny_model

from seqrerank.candidates import CandidateTraining, RankedLists, sample_ground_truth
from seqrerank.data.dataset import SequenceData
from seqrerank.evaluation import evaluate, rerank
from seqrerank.llm.prompts import label_names
from seqrerank.llm.tiny import qwen_tokenizer
from seqrerank.methods.llm_reranker import LLMReranker
from seqrerank.model_files import save_model
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
