"""The LLM rerankers on tiny random-weight models with the real Qwen tokenizer (offline):
index labels, prompts, verbalizer scoring, LoRA training, the Qwen3-VL modes, the adapter-only
checkpoints, and the vLLM backend where it is installed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from seqrerank.candidates import CandidateTraining, RankedLists, sample_ground_truth
from seqrerank.data.dataset import SequenceData
from seqrerank.evaluation import evaluate, rerank
from seqrerank.llm.prompts import label_names
from seqrerank.llm.tiny import qwen_tokenizer
from seqrerank.methods.llm_reranker import LLMReranker
from seqrerank.pipeline import build_model, load_model, save_model
from seqrerank.training import TrainSettings, fit

TINY = {"model_name": "tiny", "max_history": 5, "max_item_tokens": 8, "score_batch_size": 16}
VISION_MODES = ("raw_image", "caption", "semantic_summary", "semantic_summary_small")


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
    return build_model("qwen", demo_data, demo_dir, {**TINY, "max_candidates": 60}, seed=0)


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
    model = build_model("qwen", demo_data, demo_dir, {**TINY, "max_candidates": 4}, seed=0)
    candidates = torch.tensor([[5, 6, 7, 8, 9, 10, 0]])
    histories = torch.tensor([demo_data.inputs("val")[0][-5:]])
    with torch.inference_mode():
        scores = model.score_candidates(torch.tensor([1]), histories, candidates)
    assert torch.isfinite(scores[0, :4]).all()
    assert torch.isinf(scores[0, 4:]).all()


# ---- training ---------------------------------------------------------------------------------

# The tiny model learns the demo's signal fastest with LoRA on every linear layer and a high lr.
TRAINABLE = {
    **TINY,
    "max_candidates": 20,
    "lora_rank": 16,
    "lora_target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj"],
}


def test_lora_training_lowers_the_loss_and_raises_val_ndcg(
    demo_data: SequenceData, demo_dir: Path, tmp_path: Path
) -> None:
    model = build_model("qwen", demo_data, demo_dir, TRAINABLE, seed=0)
    train = CandidateTraining(demo_data, sample_ground_truth(demo_data, "train", 19, seed=42))
    val = sample_ground_truth(demo_data, "val", 19, seed=42)
    untrained = evaluate(rerank(model, demo_data, val))["ndcg@10"]
    settings = TrainSettings(epochs=2, lr=5e-3, batch_size=16, patience=2, seed=0)
    history = fit(model, train, settings, tmp_path, lambda m: evaluate(rerank(m, demo_data, val)))
    assert history[-1]["loss"] < history[0]["loss"] < np.log(20)
    trained = max(epoch["val"]["ndcg@10"] for epoch in history)
    assert trained > untrained + 0.05, (untrained, history)


def test_only_the_adapter_trains_and_is_saved(
    qwen: LLMReranker, demo_data: SequenceData, demo_dir: Path, tmp_path: Path
) -> None:
    trainable = {n for n, p in qwen.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    state = qwen.state_dict()
    assert state and all("lora_" in name for name in state)
    path = tmp_path / "model.pt"
    save_model(qwen, "qwen", {**TINY, "max_candidates": 60}, path)
    assert path.stat().st_size < 1_000_000  # the 10M-parameter base model is not in it
    with torch.no_grad():
        next(p for n, p in qwen.named_parameters() if "lora_B" in n).add_(0.5)
    reloaded = load_model(path, demo_data, demo_dir)
    assert all(torch.equal(v, reloaded.state_dict()[k]) for k, v in state.items())


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


@pytest.mark.parametrize("mode", VISION_MODES)
def test_each_qwen3vl_mode_builds_its_own_prompt(
    mode: str, demo_data: SequenceData, demo_with_texts: Path
) -> None:
    model = build_model(f"qwen3vl_{mode}", demo_data, demo_with_texts, TINY, seed=0)
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
    others = [m for m in VISION_MODES if m != mode and not mode.startswith(m + "_")]
    assert not any(f"{other} " in text for other in others if other != "raw_image")
    with torch.inference_mode():
        scores = model.score_candidates(
            torch.tensor([1]), torch.tensor([history]), torch.tensor([candidates])
        )
    assert scores.shape == (1, 30) and torch.isfinite(scores).all()


def test_a_text_mode_without_its_item_texts_says_which_rule_makes_them(
    demo_data: SequenceData, demo_dir: Path
) -> None:
    with pytest.raises(ValueError, match="no 'caption' column.*data rules"):
        build_model("qwen3vl_caption", demo_data, demo_dir, TINY, seed=0)


def test_raw_image_batches_pad_on_the_left_and_score_like_single_prompts(
    demo_data: SequenceData, demo_dir: Path
) -> None:
    model = build_model("qwen3vl_raw_image", demo_data, demo_dir, TINY, seed=0)
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
        model = build_model("qwen", demo_data, demo_dir, {**TINY, "backend": backend}, seed=0)
        ranked[backend] = rerank(model, demo_data, lists).items
    np.testing.assert_array_equal(ranked["transformers"], ranked["vllm"])
