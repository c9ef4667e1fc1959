"""VIP5 on a tiny random-weight T5 with the demo's tiny CLIP image features (offline).

What the reference implementation (github.com/jeykigung/VIP5) does and these tests pin: the
published prompts with visual tokens after item ids; whole-word embeddings shared by the pieces
of one word, category embeddings for visual tokens; adapters on a sublayer's output before the
residual add; the length-aware seq2seq loss; length-normalised id scores. Then: VIP5 provably
trains (it memorises 32 training lists, reloads from its checkpoint and ranks every target first
through the batched scoring path, while controls with shuffled or shifted answers fail), batched
scores equal each candidate decoded alone, adapter-only checkpoints reload in another process,
and a dataset without images fails with the setting that provides them.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import build, load, tiny_model

from seqrerank.candidates import CandidateTraining, RankedLists, sample_ground_truth
from seqrerank.data.dataset import SequenceData
from seqrerank.features import FeatureError
from seqrerank.methods.vip5 import TEMPLATES, VIP5, WHOLE_WORDS, whole_word_ids
from seqrerank.model_files import save_model
from seqrerank.training import TrainSettings, fit

REPO = Path(__file__).resolve().parents[1]
TINY = {"model_name": tiny_model("t5"), "max_history": 5, "score_batch_size": 16}
PHOTO = "<extra_id_0> <extra_id_0>"


pytestmark = pytest.mark.usefixtures("tiny_models")


@pytest.fixture(scope="module")
def image(demo_feature_files: dict) -> dict[str, Path]:
    return {"image": demo_feature_files["image"]}


@pytest.fixture(scope="module")
def vip5(demo_data: SequenceData, demo_dir: Path, image: dict) -> VIP5:
    return build("vip5", demo_data, demo_dir, TINY, seed=0, features=image).eval()


def padded_inputs(
    data: SequenceData, split: str, users: list[int], pools: list[list[int]]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(users, histories, candidates) tensors as the evaluation passes them: left-padded
    histories (the inputs of ``split``), candidate lists padded with 0 on the right."""
    histories = [data.inputs(split)[user - 1] for user in users]
    width = max(map(len, histories))
    histories = [np.pad(h, (width - len(h), 0)) for h in histories]
    width = max(map(len, pools))
    candidates = np.stack([np.pad(pool, (0, width - len(pool))) for pool in pools])
    return torch.tensor(users), torch.tensor(np.stack(histories)), torch.tensor(candidates)


# ---- prompts, as the reference's data loader fills its templates -------------------------------


def test_the_scoring_prompt_is_the_published_one_with_two_visual_tokens_after_every_item(
    vip5: VIP5,
) -> None:
    text, shown = vip5.prompt("A-3", 1, [5, 71, 12])
    assert text == (
        "Here is the purchase history list of user_1 : \n "
        f"5 {PHOTO} , 71 {PHOTO} , 12 {PHOTO} \n try to recommend next item to the user"
    )
    assert shown == [5, 71, 12]
    assert vip5.tokenizer(text).input_ids.count(vip5.image_token_id) == 2 * 3
    arrows, _ = vip5.prompt("A-3", 1, [5, 71], arrows=True)
    assert f"5 {PHOTO} -> 71 {PHOTO} \n" in arrows


def test_the_other_families_prompts_show_an_item_its_title_or_the_candidates(
    vip5: VIP5, demo_data: SequenceData
) -> None:
    text, shown = vip5.prompt("A-7", 4, [5, 6], item=9)
    assert text.endswith(f"5 {PHOTO} , 6 {PHOTO} \n does the user likely to buy 9 {PHOTO} next ?")
    assert shown == [5, 6, 9]
    assert vip5.prompt("B-1", 4, item=9) == (
        f"Will user_4 likely to interact with item_9 {PHOTO} ?",
        [9],
    )
    title = vip5.item_titles[9]
    assert title and vip5.prompt("B-3", 4, item=9)[0] == (
        f"For user_4, do you think it is good to recommend {title} {PHOTO} ?"
    )
    text, shown = vip5.prompt("B-7", 4, [5, 6], [30, 7, 9])
    assert text == (
        "Pick the most suitable item from the following list and recommend to user_4 : \n "
        f"30 {PHOTO} , 7 {PHOTO} , 9 {PHOTO}"
    )
    assert shown == [30, 7, 9]  # the history is not in a direct prompt


def test_a_training_example_draws_its_answer_as_the_reference_does(vip5: VIP5) -> None:
    """An item prompt answers the target's id; a yes/no prompt the target and ``yes`` or
    another item of the pool and ``no``, at even odds."""
    history, pool = np.array([5, 6, 7]), np.array([40, 41, 42, 43])
    generator = torch.Generator().manual_seed(0)
    source, shown, answer = vip5.training_example("A-2", 3, history, pool, 2, generator)
    assert answer == "42" and shown == [5, 6, 7]
    answers = [vip5.training_example("B-1", 3, history, pool, 2, generator) for _ in range(200)]
    yes = [shown for _, shown, answer in answers if answer == "yes"]
    no = [shown for _, shown, answer in answers if answer == "no"]
    assert 70 < len(yes) < 130 and len(yes) + len(no) == 200
    assert all(shown == [42] for shown in yes)
    assert {shown[0] for shown in no} == {40, 41, 43}


def test_each_epoch_trains_on_prompts_of_each_family_for_every_user(
    demo_data: SequenceData, demo_dir: Path, image: dict
) -> None:
    task = CandidateTraining(demo_data, sample_ground_truth(demo_data, "train", 19, seed=0))
    for prompts in (1, 3):
        params = {**TINY, "train_users_per_epoch": 50, "prompts_per_family": prompts}
        model = build("vip5", demo_data, demo_dir, params, 0, image)
        batches = list(model.training_batches(task, 16, torch.Generator().manual_seed(0)))
        sources = [source for batch in batches for source in batch[0]]
        assert len(sources) == 2 * prompts * 50
    used = {name for name, t in TEMPLATES.items() for s in sources if _fills(t.source, s)}
    assert {name[0] for name in used} == {"A", "B"}
    assert not used & {"A-9", "B-8"}  # the reference's unseen test prompts


def _fills(template: str, text: str) -> bool:
    """Whether ``text`` is ``template`` filled (its fixed words, in order)."""
    import re

    fixed = [re.escape(part) for part in re.split(r"\{\w+\}", template)]
    return re.fullmatch(".*".join(fixed), text, flags=re.DOTALL) is not None


# ---- the joint encoder -------------------------------------------------------------------------


def test_the_pieces_of_one_id_share_one_whole_word_embedding(vip5: VIP5) -> None:
    """As P5/VIP5: the tokens of one whitespace-delimited word (``user_1234`` is four tokens
    here: user, _, 123, ##4) share the word's whole-word id; each visual token is a word of its
    own and of category 1; ``</s>`` has whole-word id 0. The encoder reads token + whole-word +
    category embeddings."""
    text = f"Will user_1234 likely to interact with item_9 {PHOTO} ?"
    embeddings, _, ids = vip5.embed([text], [[9]])
    tokens = vip5.tokenizer.convert_ids_to_tokens(ids["input_ids"][0])
    words, categories = ids["whole_word_ids"][0].tolist(), ids["category_ids"][0].tolist()
    assert tokens[1:5] == ["user", "_", "123", "##4"]
    assert words[1:5] == [2, 2, 2, 2]
    assert tokens[9:12] == ["item", "_", "9"] and words[9:12] == [7, 7, 7]
    assert tokens[12:14] == ["<extra_id_0>"] * 2 and words[12:14] == [8, 9]
    assert categories == [0] * 12 + [1, 1] + [0, 0]
    assert tokens[-1] == "</s>" and words[-1] == 0
    assert words == [1, 2, 2, 2, 2, 3, 4, 5, 6, 7, 7, 7, 8, 9, 10, 0]
    with torch.no_grad():
        plain = vip5.t5.get_input_embeddings()(ids["input_ids"][0])
        plain[12:14] = vip5.visual(vip5.image_features[[9]])[0]
        expected = (
            plain
            + vip5.whole_word_embeddings.weight[words]
            + vip5.category_embeddings.weight[categories]
        )
    torch.testing.assert_close(embeddings[0], expected)
    # one id's pieces: one and the same whole-word embedding
    assert torch.equal(
        vip5.whole_word_embeddings(torch.tensor(words[1:5])),
        vip5.whole_word_embeddings.weight[2].expand(4, -1),
    )


def test_whole_word_ids_follow_the_references_rule_on_a_sentencepiece_tokenizer() -> None:
    """The reference numbers words at every ``▁`` piece and every placeholder of T5's
    SentencePiece tokens; the offsets rule gives the same ids on a Metaspace tokenizer (T5's
    fast tokenizer's pre-tokenizer), lone ``▁`` pieces included."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    special = ["<pad>", "</s>", "<unk>", "<extra_id_0>"]
    pieces = ["▁", "▁user", "_", "12", "34", "▁12", "▁5", "▁,", "▁Here", "▁is", "▁:"]
    vocab = [(p, 0.0) for p in special] + [(p, -1.0) for p in pieces]
    model = Tokenizer(models.Unigram(vocab + [(c, -5.0) for c in "aeHirsu:,"], unk_id=2))
    model.add_special_tokens(special)
    model.pre_tokenizer = pre_tokenizers.Metaspace()
    model.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=model, eos_token="</s>")
    text = f"Here is user_1234 : 5 {PHOTO} , 1234 {PHOTO}"
    encoded = tokenizer(text, return_offsets_mapping=True)
    tokens = tokenizer.convert_ids_to_tokens(encoded.input_ids)
    assert tokens[2:6] == ["▁user", "_", "12", "34"]
    reference, word = [], 0
    for token in tokens[:-1]:
        word += token.startswith("▁") or token == "<extra_id_0>"
        reference.append(word)
    ours = whole_word_ids(text, encoded.offset_mapping, encoded.input_ids, 3, {0, 1})
    assert ours == [*reference, 0]


def test_a_prompt_longer_than_the_whole_word_table_fails_clearly(vip5: VIP5) -> None:
    text, shown = vip5.prompt("A-3", 1, np.arange(300) % 250 + 1)  # 4 words an item
    with pytest.raises(ValueError, match=f"whole-word embeddings hold {WHOLE_WORDS - 1}"):
        vip5.encode([text], [shown])


def test_adapters_act_on_each_sublayers_output_before_the_residual_add(vip5: VIP5) -> None:
    """A T5 layer with VIP5's adapter computes ``h + a(f(norm(h)))``, with
    ``a(y) = y + up(swish(down(y)))`` (the reference's AdapterController), for self-attention,
    cross-attention and the feed-forward network alike (no dropout in eval mode). ``f`` is the
    sublayer's own ``forward``, which bypasses the hook that applies the adapter."""

    def adapted(adapter, y):
        return y + adapter.up(F.silu(adapter.down(y)))

    torch.manual_seed(0)
    h, encoded = torch.randn(2, 7, 64), torch.randn(2, 5, 64)
    encoder_layers = vip5.t5.encoder.block[0].layer
    decoder_layers = vip5.t5.decoder.block[1].layer
    adapters = iter(vip5.adapters)
    first = [next(adapters) for _ in range(2)]  # encoder block 0: attention, feed-forward
    for _ in range(2 + 3):  # encoder block 1, decoder block 0
        next(adapters)
    last = [next(adapters) for _ in range(3)]  # decoder block 1
    with torch.no_grad():
        attention = encoder_layers[0]
        y = attention.SelfAttention.forward(attention.layer_norm(h))[0]
        torch.testing.assert_close(attention(h)[0], h + adapted(first[0], y))
        cross = decoder_layers[1]
        y = cross.EncDecAttention.forward(cross.layer_norm(h), key_value_states=encoded)[0]
        torch.testing.assert_close(cross(h, key_value_states=encoded)[0], h + adapted(last[1], y))
        for layer, adapter in ((encoder_layers[1], first[1]), (decoder_layers[2], last[2])):
            y = layer.DenseReluDense.forward(layer.layer_norm(h))
            torch.testing.assert_close(layer(h), h + adapted(adapter, y))


def test_only_adapters_layer_norms_and_the_visual_mlp_train(vip5: VIP5) -> None:
    trainable = {name for name, p in vip5.named_parameters() if p.requires_grad}
    kinds = {name.split(".")[0] for name in trainable}
    assert kinds == {"t5", "adapters", "visual"}
    assert all("layer_norm" in name for name in trainable if name.startswith("t5."))
    # one adapter on every attention, cross-attention and feed-forward sublayer of 2 + 2 blocks
    assert len(vip5.adapters) == 2 * 2 + 2 * 3
    assert vip5.state_dict().keys() == trainable
    # the whole-word and category embeddings stay untrained, as in the reference
    assert not vip5.whole_word_embeddings.weight.requires_grad
    assert vip5.whole_word_embeddings.weight.shape[0] == WHOLE_WORDS


# ---- scores ------------------------------------------------------------------------------------


def test_batched_scores_equal_each_candidates_length_normalised_log_likelihood_alone(
    vip5: VIP5, demo_data: SequenceData
) -> None:
    """Candidates side by side in one decoder pass, prompts padded in a batch, pools of
    different sizes: every score equals the plain T5 log-likelihood of the candidate's id given
    its own prompt alone, divided by its number of tokens (with ``</s>``)."""
    pools = [[5, 120, 33, 2], [250, 9], [17, 18, 19, 200, 201, 3]]
    users, histories, candidates = padded_inputs(demo_data, "val", [1, 2, 3], pools)
    with torch.inference_mode():
        scores = vip5.score_candidates(users, histories, candidates)
        for row, pool in enumerate(pools):
            history = histories[row][histories[row] > 0].numpy()
            states, mask = vip5.encode(*vip5.scoring_prompts([row + 1], [history], [pool]))
            for column, item in enumerate(pool):
                labels = vip5.tokenizer(str(item), return_tensors="pt").input_ids
                logits = vip5.t5(encoder_outputs=(states,), attention_mask=mask, labels=labels)
                alone = -F.cross_entropy(logits.logits[0], labels[0])
                torch.testing.assert_close(scores[row, column], alone, rtol=1e-4, atol=1e-4)
    assert torch.isinf(scores[1, 2:]).all()  # padding


def test_ids_of_different_lengths_get_no_advantage(image: dict, demo_features: dict) -> None:
    """With every next token equally likely, ids of 1, 2 and 3 tokens score the same (a summed
    log-likelihood would rank the shortest first)."""
    dim = demo_features["image"].values.shape[1]
    model = VIP5(10_000, torch.zeros(10_001, dim), None, **TINY).eval()
    ids = [5, 1234, 10_000]
    assert [len(model.tokenizer.tokenize(str(i))) for i in ids] == [1, 2, 3]
    users, histories, candidates = torch.tensor([1]), torch.tensor([[7, 8]]), torch.tensor([ids])
    uniform = model.t5.lm_head.register_forward_hook(lambda _m, _i, out: torch.zeros_like(out))
    try:
        with torch.inference_mode():
            scores = model.score_candidates(users, histories, candidates)
    finally:
        uniform.remove()
    torch.testing.assert_close(scores[0], torch.full((3,), -np.log(len(model.tokenizer))))


def test_the_visual_tokens_change_the_scores(vip5: VIP5, demo_data: SequenceData) -> None:
    inputs = padded_inputs(demo_data, "val", [1, 2], [list(range(1, 21)), list(range(40, 60))])
    with torch.inference_mode():
        scores = vip5.score_candidates(*inputs)
        zeroed = vip5.visual.register_forward_hook(lambda _m, _i, out: torch.zeros_like(out))
        try:
            without = vip5.score_candidates(*inputs)
        finally:
            zeroed.remove()
    assert (scores - without).abs().min() > 1e-4


def test_max_candidates_scores_the_first_ones_and_leaves_the_rest_below(
    demo_data: SequenceData, demo_dir: Path, image: dict
) -> None:
    for template in ("A-3", "B-5"):
        params = {**TINY, "max_candidates": 3, "score_template": template}
        model = build("vip5", demo_data, demo_dir, params, 0, image)
        with torch.inference_mode():
            scores = model.score_candidates(*padded_inputs(demo_data, "val", [1], [[4, 5, 6, 7]]))
        assert torch.isfinite(scores[0, :3]).all() and torch.isinf(scores[0, 3:]).all()


def test_a_yes_no_prompt_cannot_score_and_unknown_templates_are_named(
    demo_data: SequenceData, demo_dir: Path, image: dict
) -> None:
    with pytest.raises(ValueError, match="score_template B-1 answers yes/no"):
        build("vip5", demo_data, demo_dir, {**TINY, "score_template": "B-1"}, 0, image)
    with pytest.raises(ValueError, match=r"unknown VIP5 template\(s\) \['C-1'\]"):
        build("vip5", demo_data, demo_dir, {**TINY, "train_templates": ["C-1"]}, 0, image)


# ---- the loss ----------------------------------------------------------------------------------


def test_the_seq2seq_loss_is_the_references_length_aware_cross_entropy(vip5: VIP5) -> None:
    """Per example: the answer tokens' mean cross-entropy (``</s>`` included) over their count;
    the batch's mean."""
    batch = (
        [vip5.prompt("A-1", 1, [5, 6])[0], vip5.prompt("B-1", 2, item=7)[0]],
        [[5, 6], [7]],
        ["1234", "yes"],  # 2 tokens + </s>, 1 token + </s>
    )
    with torch.no_grad():
        loss = vip5.seq2seq_loss(batch)
        expected = []
        for source, shown, answer in zip(*batch, strict=True):
            states, mask = vip5.encode([source], [shown])
            labels = vip5.tokenizer(answer, return_tensors="pt").input_ids
            logits = vip5.t5(encoder_outputs=(states,), attention_mask=mask, labels=labels).logits
            expected.append(F.cross_entropy(logits[0], labels[0]) / labels.shape[1])
    torch.testing.assert_close(loss, torch.stack(expected).mean())


# ---- VIP5 provably trains: it memorises 32 training lists (issue 17) -------------------------

MEMORY = {**TINY, "train_templates": ["A-3"], "score_template": "A-3"}
EPOCHS = {"seq2seq": 120, "listwise": 60}


@pytest.fixture(scope="module")
def lists32(demo_data: SequenceData) -> RankedLists:
    """32 ground-truth training lists: the target and 19 random negatives."""
    return sample_ground_truth(demo_data, "train", 19, seed=0).first_users(32)


def memorise(
    data: SequenceData,
    data_dir: Path,
    image: dict,
    lists: RankedLists,
    out: Path,
    objective: str = "seq2seq",
) -> tuple[list[float], VIP5, float]:
    """Train VIP5 on ``lists`` in the workflow's loop (every epoch counts as the best, so the
    last is kept), save it and load it back: (epoch losses, reloaded model, CPU seconds)."""
    started = time.process_time()
    params = {**MEMORY, "objective": objective}
    model = build("vip5", data, data_dir, params, seed=0, features=image)
    epochs = itertools.count()
    settings = TrainSettings(epochs=EPOCHS[objective], lr=1e-2, batch_size=32, patience=10**6)
    history = fit(
        model,
        CandidateTraining(data, lists),
        settings,
        out / "checkpoints",
        lambda _model: {"ndcg@10": float(next(epochs))},
    )
    save_model(model, "vip5", params, out / "model.pt")
    reloaded = load(out / "model.pt", data, data_dir, image)
    return [epoch["loss"] for epoch in history], reloaded, time.process_time() - started


def top_ranked(model: VIP5, data: SequenceData, lists: RankedLists) -> np.ndarray:
    """The item each of ``lists``' users gets ranked first through ``score_candidates`` as the
    evaluation calls it: pools of 20, 17, 14 and 11 candidates (negatives dropped, the target
    kept, at a position that varies) padded side by side, histories left-padded, two batches of
    16 users."""
    pools = []
    for row, (target, items) in enumerate(zip(lists.targets, lists.items, strict=True)):
        negatives = list(dict.fromkeys(items[items != target].tolist()))[: 19 - 3 * (row % 4)]
        pools.append([*negatives[: row % 11], target, *negatives[row % 11 :]])
    assert {20, 17, 14, 11} <= {len(pool) for pool in pools}
    users, histories, candidates = padded_inputs(data, "train", lists.users.tolist(), pools)
    with torch.inference_mode():
        scores = model.score_candidates(users, histories, candidates)
    assert torch.isinf(scores[candidates == 0]).all()
    return candidates[torch.arange(len(pools)), scores.argmax(1)].numpy()


@pytest.mark.parametrize("objective", ["seq2seq", "listwise"])
def test_vip5_memorises_32_training_lists_and_ranks_every_target_first_after_reloading(
    objective: str,
    demo_data: SequenceData,
    demo_dir: Path,
    image: dict,
    lists32: RankedLists,
    tmp_path: Path,
) -> None:
    """The published seq2seq loss (and our listwise one) on the tiny frozen T5: the loss falls
    below a tenth of the first epoch's, which only memorising the 32 answers reaches (a model
    that knows only which 32 items answer scores ln 32 per id), and the reloaded model ranks
    every target first. Measured on two busy cores: about 15 s CPU (listwise 10 s)."""
    losses, model, seconds = memorise(demo_data, demo_dir, image, lists32, tmp_path, objective)
    assert min(losses[-5:]) < losses[0] / 10, losses[::10]
    assert (top_ranked(model, demo_data, lists32) == lists32.targets).all()
    assert seconds < 60


def test_control_vip5_trained_on_shuffled_answers_does_not_find_the_true_targets(
    demo_data: SequenceData, demo_dir: Path, image: dict, lists32: RankedLists, tmp_path: Path
) -> None:
    """The same run with each prompt's answer taken from another user (and put in its pool):
    the model memorises what it was taught, and the true targets come first no more often than
    by chance (1 in 11 to 20 candidates: 2 of 32 expected), so neither a position in the pool
    nor a popular item passes the check above."""
    derangement = np.roll(np.arange(len(lists32)), 1)
    answers = lists32.targets[derangement]
    items = np.where(lists32.items == lists32.targets[:, None], answers[:, None], lists32.items)
    shuffled = RankedLists("train", lists32.users, answers, items, lists32.scores)
    losses, model, seconds = memorise(demo_data, demo_dir, image, shuffled, tmp_path)
    assert min(losses[-5:]) < losses[0] / 10  # it learnt the shuffled answers ...
    assert (top_ranked(model, demo_data, shuffled) == answers).mean() > 0.9
    assert (top_ranked(model, demo_data, lists32) == lists32.targets).sum() <= 5  # ... only
    assert seconds < 60


def test_control_labels_shifted_by_one_fail_the_check(
    demo_data: SequenceData, demo_dir: Path, image: dict, lists32: RankedLists, tmp_path: Path
) -> None:
    """A run whose answers are each the candidate after the target in its list (an off-by-one
    label) fails the memorisation check: the check can fail."""
    position = np.argmax(lists32.items == lists32.targets[:, None], axis=1)
    neighbours = lists32.items[np.arange(len(lists32)), (position + 1) % lists32.items.shape[1]]
    shifted = RankedLists("train", lists32.users, neighbours, lists32.items, lists32.scores)
    _, model, seconds = memorise(demo_data, demo_dir, image, shifted, tmp_path)
    first = top_ranked(model, demo_data, lists32)
    assert not (first == lists32.targets).all()
    assert (first == lists32.targets).sum() <= 5
    assert seconds < 60


# ---- checkpoints and errors --------------------------------------------------------------------


def test_a_saved_model_reloads_in_another_process_with_the_same_scores(
    vip5: VIP5, demo_data: SequenceData, demo_dir: Path, image: dict, tmp_path: Path
) -> None:
    """Only the trainable weights are saved; the frozen T5 comes from its checkpoint folder and
    the untrained whole-word and category embeddings from their seed, identically."""
    with torch.no_grad():  # weights unlike a fresh model's
        for adapter in vip5.adapters:
            adapter.up.weight.add_(0.1)
    path = tmp_path / "model.pt"
    save_model(vip5, "vip5", TINY, path)
    assert path.stat().st_size < 200_000  # the trainable weights only
    inputs = padded_inputs(demo_data, "val", [1, 2, 3], [list(range(1, 21))] * 3)
    torch.save(inputs, tmp_path / "inputs.pt")
    with torch.inference_mode():
        expected = vip5.score_candidates(*inputs)
    script = (
        "import sys, torch\n"
        "from pathlib import Path\n"
        "from seqrerank.data.dataset import load_sequences\n"
        "from seqrerank.features import load_feature_files\n"
        "from seqrerank.model_files import load_model\n"
        "torch.set_num_threads(1)\n"
        "out, data_dir, model_path, image = map(Path, sys.argv[1:])\n"
        "data = load_sequences(data_dir)\n"
        "features = load_feature_files({'image': image}, data.num_items)\n"
        "model = load_model(model_path, data, features=features)\n"
        "with torch.inference_mode():\n"
        "    scores = model.score_candidates(*torch.load(out / 'inputs.pt'))\n"
        "torch.save(scores, out / 'scores.pt')\n"
    )
    command = [sys.executable, "-c", script, tmp_path, demo_dir, path, image["image"]]
    try:
        subprocess.run(command, cwd=REPO, check=True)
    finally:
        with torch.no_grad():
            for adapter in vip5.adapters:
                adapter.up.weight.sub_(0.1)
    assert torch.equal(torch.load(tmp_path / "scores.pt"), expected)


def test_a_dataset_without_images_names_the_setting_that_provides_them(
    demo_data: SequenceData, demo_dir: Path, demo_feature_files: dict
) -> None:
    for features in (None, {"text": demo_feature_files["text"]}):
        with pytest.raises(FeatureError, match=r"VIP5 needs item features.*use_image: true") as e:
            build("vip5", demo_data, demo_dir, TINY, seed=0, features=features)
        assert "use_text" not in str(e.value)  # only the modality VIP5 reads
