"""VIP5 on a tiny random-weight T5 with the demo's tiny CLIP image features (offline): the prompt
and its visual tokens, batched id scoring, training, adapter-only checkpoints reloaded in another
process, and the error of a dataset without images."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import build, tiny_model

from seqrerank.candidates import CandidateTraining, sample_ground_truth
from seqrerank.data.dataset import SequenceData
from seqrerank.evaluation import evaluate, rerank
from seqrerank.features import FeatureError
from seqrerank.methods.vip5 import VIP5
from seqrerank.model_files import save_model
from seqrerank.training import TrainSettings, fit

REPO = Path(__file__).resolve().parents[1]
TINY = {"model_name": tiny_model("t5"), "max_history": 5, "score_batch_size": 16}


pytestmark = pytest.mark.usefixtures("tiny_models")


@pytest.fixture(scope="module")
def image(demo_feature_files: dict) -> dict[str, Path]:
    return {"image": demo_feature_files["image"]}


@pytest.fixture(scope="module")
def vip5(demo_data: SequenceData, demo_dir: Path, image: dict) -> VIP5:
    model = build("vip5", demo_data, demo_dir, TINY, seed=0, features=image)
    with torch.no_grad():  # trained-looking adapters: they start as the identity
        for adapter in model.adapters:
            adapter.up.weight.normal_(std=0.1)
    return model.eval()


def val_inputs(data: SequenceData, users: list[int], pools: list[list[int]]) -> tuple:
    """(users, histories, candidates) tensors as the evaluation passes them: left-padded
    histories, candidate lists padded with 0 on the right."""
    histories = [data.inputs("val")[user - 1] for user in users]
    width = max(map(len, histories))
    histories = [np.pad(h, (width - len(h), 0)) for h in histories]
    width = max(map(len, pools))
    candidates = np.stack([np.pad(pool, (0, width - len(pool))) for pool in pools])
    return torch.tensor(users), torch.tensor(np.stack(histories)), torch.tensor(candidates)


def test_the_prompt_lists_history_and_candidates_each_with_two_visual_tokens(
    vip5: VIP5, demo_data: SequenceData
) -> None:
    history = demo_data.inputs("val")[0]
    text = vip5.prompt(1, history[-5:], [12, 7, 250])
    assert text.startswith("user_1 has bought ")
    shown = ", ".join(f"item_{item} <extra_id_0><extra_id_0>" for item in history[-5:])
    assert f"bought {shown}. Pick" in text
    assert text.endswith("next: item_12 <extra_id_0><extra_id_0>, item_7 "
                         "<extra_id_0><extra_id_0>, item_250 <extra_id_0><extra_id_0>")  # fmt: skip
    ids = vip5.tokenizer(text).input_ids
    assert ids.count(vip5.image_token_id) == 2 * (5 + 3)


def test_batched_scores_equal_each_candidate_decoded_alone(
    vip5: VIP5, demo_data: SequenceData
) -> None:
    """Candidates side by side in one decoder pass, prompts padded in a batch, pools of
    different sizes and ids of 1 to 3 digits: every score equals the plain T5 log-likelihood
    of the candidate's id given its own prompt alone."""
    pools = [[5, 120, 33, 2], [250, 9], [17, 18, 19, 200, 201, 3]]
    users, histories, candidates = val_inputs(demo_data, [1, 2, 3], pools)
    with torch.inference_mode():
        scores = vip5.score_candidates(users, histories, candidates)
        for row, pool in enumerate(pools):
            history = histories[row][histories[row] > 0].numpy()
            states, mask = vip5.encode([row + 1], [history], [np.array(pool)])
            for column, item in enumerate(pool):
                labels = vip5.tokenizer(f"item_{item}", return_tensors="pt").input_ids
                logits = vip5.t5(encoder_outputs=(states,), attention_mask=mask, labels=labels)
                alone = -F.cross_entropy(logits.logits[0], labels[0], reduction="sum")
                torch.testing.assert_close(scores[row, column], alone, rtol=1e-4, atol=1e-4)
    assert torch.isinf(scores[1, 2:]).all()  # padding


def test_the_visual_tokens_change_the_scores(vip5: VIP5, demo_data: SequenceData) -> None:
    inputs = val_inputs(demo_data, [1, 2], [list(range(1, 21)), list(range(40, 60))])
    with torch.inference_mode():
        scores = vip5.score_candidates(*inputs)
        zeroed = vip5.visual.register_forward_hook(lambda _m, _i, out: torch.zeros_like(out))
        try:
            without = vip5.score_candidates(*inputs)
        finally:
            zeroed.remove()
    assert (scores - without).abs().min() > 1e-3


def test_max_candidates_scores_the_first_ones_and_leaves_the_rest_below(
    demo_data: SequenceData, demo_dir: Path, image: dict
) -> None:
    model = build("vip5", demo_data, demo_dir, {**TINY, "max_candidates": 3}, 0, image)
    with torch.inference_mode():
        scores = model.score_candidates(*val_inputs(demo_data, [1], [[4, 5, 6, 7, 8]]))
    assert torch.isfinite(scores[0, :3]).all() and torch.isinf(scores[0, 3:]).all()


def test_training_lowers_the_loss_and_beats_random_order(
    demo_data: SequenceData, demo_dir: Path, image: dict, tmp_path: Path
) -> None:
    """The shared loop on demo ground-truth candidates (the target and 19 random items), two
    epochs of 320 users: the loss falls, the frozen T5 does not move, and the best epoch ranks
    the val candidates of 500 users well above their random order (NDCG@10 about .21; the
    untrained model's is about .22)."""
    params = {**TINY, "max_history": 3, "train_users_per_epoch": 320}
    model = build("vip5", demo_data, demo_dir, params, seed=0, features=image)
    train = CandidateTraining(demo_data, sample_ground_truth(demo_data, "train", 19, seed=42))
    val = sample_ground_truth(demo_data, "val", 19, seed=42).first_users(500)
    settings = TrainSettings(epochs=2, lr=3e-2, batch_size=32, patience=2, seed=0)
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    history = fit(model, train, settings, tmp_path, lambda m: evaluate(rerank(m, demo_data, val)))
    assert history[1]["loss"] < history[0]["loss"]
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    best = max(epoch["val"]["ndcg@10"] for epoch in history)
    assert evaluate(rerank(model, demo_data, val))["ndcg@10"] == best
    assert best > evaluate(val)["ndcg@10"] + 0.02


def test_only_adapters_layer_norms_and_the_visual_mlp_train(
    vip5: VIP5, demo_data: SequenceData
) -> None:
    trainable = {name for name, p in vip5.named_parameters() if p.requires_grad}
    kinds = {name.split(".")[0] for name in trainable}
    assert kinds == {"t5", "adapters", "visual"}
    assert all("layer_norm" in name for name in trainable if name.startswith("t5."))
    # after every attention, cross-attention and feed-forward sublayer of the 2 + 2 blocks
    assert len(vip5.adapters) == 2 * 2 + 2 * 3
    assert vip5.state_dict().keys() == trainable


def test_a_saved_model_reloads_in_another_process_with_the_same_scores(
    vip5: VIP5, demo_data: SequenceData, demo_dir: Path, image: dict, tmp_path: Path
) -> None:
    path = tmp_path / "model.pt"
    save_model(vip5, "vip5", TINY, path)
    assert path.stat().st_size < 200_000  # the trainable weights only
    inputs = val_inputs(demo_data, [1, 2, 3], [list(range(1, 21))] * 3)
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
    subprocess.run(command, cwd=REPO, check=True)
    assert torch.equal(torch.load(tmp_path / "scores.pt"), expected)


def test_a_dataset_without_images_names_the_setting_that_provides_them(
    demo_data: SequenceData, demo_dir: Path, demo_feature_files: dict
) -> None:
    for features in (None, {"text": demo_feature_files["text"]}):
        with pytest.raises(FeatureError, match=r"VIP5 needs item features.*use_image: true") as e:
            build("vip5", demo_data, demo_dir, TINY, seed=0, features=features)
        assert "use_text" not in str(e.value)  # only the modality VIP5 reads
