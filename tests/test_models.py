"""The leave-one-out tasks, what the models train on (never a validation or test interaction),
and that LRURec and BERT4Rec actually learn on the demo data."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import build
from torch import nn

from seqrerank.batching import length_bucketed_batches
from seqrerank.candidates import sample_ground_truth
from seqrerank.data.dataset import SequenceData, load_sequences
from seqrerank.evaluation import evaluate, rerank, retrieve
from seqrerank.methods.bert4rec import BERT4Rec
from seqrerank.methods.lrurec import LRURec
from seqrerank.methods.popularity import Popularity
from seqrerank.pipeline import train
from seqrerank.training import TrainSettings

# config/demo.yaml's model and training settings.
LRUREC_DEMO = {"hidden": 64, "blocks": 2, "dropout": 0.2, "max_len": 20}
BERT4REC_DEMO = {
    "hidden": 64,
    "layers": 2,
    "heads": 2,
    "dropout": 0.2,
    "max_len": 20,
    "mask_prob": 0.3,
}


def as_lists(seqs: list[np.ndarray]) -> list[list[int]]:
    return [seq.tolist() for seq in seqs]


# --- the three prediction tasks -----------------------------------------------------------


def test_train_task_predicts_the_last_training_item_from_the_ones_before(
    hand_data: SequenceData,
) -> None:
    assert as_lists(hand_data.inputs("train")) == [[1, 2], [6], [2]]
    assert hand_data.targets("train").tolist() == [3, 7, 4]


def test_val_task_predicts_the_val_item_from_the_training_items(
    hand_data: SequenceData,
) -> None:
    assert as_lists(hand_data.inputs("val")) == [[1, 2, 3], [6, 7], [2, 4]]
    assert hand_data.targets("val").tolist() == [4, 8, 6]


def test_test_task_predicts_the_test_item_from_training_and_val_items(
    hand_data: SequenceData,
) -> None:
    assert as_lists(hand_data.inputs("test")) == [[1, 2, 3, 4], [6, 7, 8], [2, 4, 6]]
    assert hand_data.targets("test").tolist() == [5, 9, 8]


def test_full_sequences_are_train_then_val_then_test(hand_data: SequenceData) -> None:
    assert as_lists(hand_data.full_sequences()) == [[1, 2, 3, 4, 5], [6, 7, 8, 9], [2, 4, 6, 8]]


def test_users_are_numbered_from_one(hand_data: SequenceData) -> None:
    assert hand_data.users.tolist() == [1, 2, 3]
    assert hand_data.num_users == 3


def test_unknown_split_names_the_valid_ones(hand_data: SequenceData) -> None:
    with pytest.raises(ValueError, match=r"unknown split 'dev'.*'train', 'val', 'test'"):
        hand_data.inputs("dev")
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        hand_data.targets("dev")


def write_prepared(path: Path, train: str, val: str, test: str, num_items: int) -> Path:
    path.mkdir()
    (path / "train.txt").write_text(train)
    (path / "val.txt").write_text(val)
    (path / "test.txt").write_text(test)
    ids = "".join(f"{i},orig{i},,,\n" for i in range(1, num_items + 1))
    (path / "items.csv").write_text("item_id,original_id,title,text,image\n" + ids)
    (path / "stats.json").write_text('{"repeats": "drop"}')
    return path


def test_load_sequences_matches_val_and_test_lines_by_user(tmp_path: Path) -> None:
    data_dir = write_prepared(
        tmp_path / "data", "1 1 2 3\n2 6 7\n3 2 4\n", "3 6\n1 4\n2 8\n", "2 9\n3 8\n1 5\n", 9
    )
    data = load_sequences(data_dir)
    assert data.num_items == 9
    assert as_lists(data.train) == [[1, 2, 3], [6, 7], [2, 4]]
    assert data.val.tolist() == [4, 8, 6]
    assert data.test.tolist() == [5, 9, 8]


def test_load_sequences_rejects_users_out_of_order(tmp_path: Path) -> None:
    data_dir = write_prepared(tmp_path / "data", "2 1 2\n1 3 4\n", "1 5\n2 5\n", "1 6\n2 6\n", 6)
    with pytest.raises(ValueError, match=r"train\.txt: users must be numbered 1\.\.U in order"):
        load_sequences(data_dir)


# --- nothing from validation or test reaches training ---------------------------------------


@pytest.fixture(scope="module")
def held_out_data(demo_data: SequenceData) -> SequenceData:
    """The demo data with every validation and test item replaced by an item id of its own,
    found nowhere else: any such id in a training batch is a leaked val/test interaction."""
    n, users = demo_data.num_items, demo_data.num_users
    return SequenceData(
        num_items=n + 2 * users,
        train=demo_data.train,
        val=np.arange(n + 1, n + users + 1),
        test=np.arange(n + users + 1, n + 2 * users + 1),
    )


def held_out_ids(data: SequenceData) -> torch.Tensor:
    return torch.as_tensor(np.concatenate([data.val, data.test]))


def batches(model, data: SequenceData) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    return model.training_batches(data, batch_size=64, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("model_class", [LRURec, BERT4Rec], ids=["lrurec", "bert4rec"])
def test_training_batches_never_contain_a_val_or_test_item(
    held_out_data: SequenceData, model_class: type
) -> None:
    model = model_class(num_items=held_out_data.num_items, hidden=16, max_len=20)
    leaked = held_out_ids(held_out_data)
    labels_seen = 0
    for inputs, labels in batches(model, held_out_data):
        assert not torch.isin(inputs, leaked).any()
        assert not torch.isin(labels, leaked).any()
        labels_seen += int((labels > 0).sum())
    assert labels_seen > 0  # the batches did hold training items


def test_lrurec_batches_hold_every_training_transition_once(demo_data: SequenceData) -> None:
    """No transition lost (or duplicated) when sequences longer than max_len are windowed."""
    model = LRURec(num_items=demo_data.num_items, hidden=16, max_len=5)
    labelled = sum(int((labels > 0).sum()) for _, labels in batches(model, demo_data))
    assert labelled == sum(len(seq) - 1 for seq in demo_data.train)


def test_length_bucketed_batches_cover_every_index_once_in_batches_of_similar_length() -> None:
    lengths = torch.randint(1, 51, (1000,), generator=torch.Generator().manual_seed(0))

    def draw(seed: int) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        return list(length_bucketed_batches(lengths, 32, generator, pool_batches=8))

    batched = draw(0)
    assert sorted(torch.cat(batched).tolist()) == list(range(1000))
    # A batch of random lengths spans ~45; a bucketed one a few, so padding is small.
    spans = [int(lengths[b].max() - lengths[b].min()) for b in batched]
    assert sum(spans) / len(spans) < 10
    assert [b.tolist() for b in draw(0)] == [b.tolist() for b in batched]
    assert [b.tolist() for b in draw(1)] != [b.tolist() for b in batched]


def test_bert4rec_masks_at_least_one_item_of_every_sequence(demo_data: SequenceData) -> None:
    model = BERT4Rec(num_items=demo_data.num_items, hidden=16, max_len=20, mask_prob=0.3)
    for inputs, labels in batches(model, demo_data):
        masked = labels > 0
        assert masked.any(dim=1).all()
        assert (inputs[masked] == model.mask_token).all()
        assert (inputs[~masked] != model.mask_token).all()


def only_the_last_item_masked(labels: torch.Tensor) -> torch.Tensor:
    """Per sequence of a left-padded batch: is its last item its only masked one?"""
    return (labels[:, -1] > 0) & ((labels[:, :-1] > 0).sum(dim=1) == 0)


def test_bert4rec_a_share_of_training_sequences_masks_only_the_last_item(
    demo_data: SequenceData,
) -> None:
    """The original code adds, beside the randomly masked copies, sequences with only their last
    item masked: the position that inference predicts."""

    def share_masking_only_the_last(mask_last_share: float) -> float:
        model = BERT4Rec(
            num_items=demo_data.num_items,
            hidden=16,
            max_len=20,
            mask_prob=0.6,
            mask_last_share=mask_last_share,
        )
        rows = torch.cat(
            [only_the_last_item_masked(labels) for _, labels in batches(model, demo_data)]
        )
        return rows.float().mean().item()

    assert share_masking_only_the_last(1.0) == 1.0
    chance = share_masking_only_the_last(0.0)  # random masks that happen to hit the last item alone
    assert chance < 0.2
    assert share_masking_only_the_last(0.5) == pytest.approx(0.5 + 0.5 * chance, abs=0.05)


def test_bert4rec_scores_through_berts_output_transform_and_the_tied_item_embeddings() -> None:
    """As the original: dense, GELU, LayerNorm, then the item embeddings (the mask token's row
    left out) and one bias per item."""
    torch.manual_seed(0)
    model = BERT4Rec(num_items=30, hidden=16)
    nn.init.normal_(model.item_bias)  # zero at initialisation, which would hide a missing bias
    hidden = torch.randn(4, 16)
    dense, _, norm = model.output_transform
    transformed = F.layer_norm(
        F.gelu(hidden @ dense.weight.T + dense.bias), (16,), norm.weight, norm.bias, norm.eps
    )
    items = model.item_embedding.weight[:31]
    expected = transformed @ items.T + model.item_bias
    torch.testing.assert_close(model.logits(hidden), expected)
    assert model.logits(hidden).shape == (4, 31)  # padding and 30 items, no mask token


def test_bert4rec_attention_dropout_is_its_own_rate() -> None:
    """The original's Beauty setting drops attention weights at 0.2 and hidden states at 0.5."""
    items = torch.tensor([[3, 5, 7, 9, 2]])

    def training_outputs_differ(attention_dropout: float) -> bool:
        torch.manual_seed(0)
        model = BERT4Rec(num_items=10, hidden=16, dropout=0.0, attention_dropout=attention_dropout)
        model.train()
        return not torch.equal(model.encode(items), model.encode(items))

    assert training_outputs_differ(0.5)
    assert not training_outputs_differ(0.0)


def test_bert4rec_scores_from_the_last_position_alone_as_from_every_position() -> None:
    torch.manual_seed(0)
    model = BERT4Rec(num_items=50, hidden=16, layers=3, max_len=10).eval()
    items = torch.tensor([[0, 0, 3, 4, 5, 51], [1, 2, 3, 4, 5, 51], [0, 0, 0, 0, 7, 51]])
    with torch.inference_mode():
        every = model.encode(items)[:, -1]
        last = model.encode(items, last_only=True)
    torch.testing.assert_close(last, every)
    assert not torch.allclose(last[0], last[2])  # histories that differ score differently


def test_popularity_counts_only_training_interactions(
    held_out_data: SequenceData, tmp_path: Path
) -> None:
    model = Popularity.from_data(held_out_data)
    assert model.counts[held_out_ids(held_out_data)].sum() == 0
    assert model.counts.sum() == sum(len(seq) for seq in held_out_data.train)


# --- the models learn ---------------------------------------------------------------------


def val_ndcg10(model, data: SequenceData) -> float:
    return evaluate(retrieve(model, data, "val", top_k=20))["ndcg@10"]


def test_lrurec_beats_popularity_after_two_epochs(
    demo_dir: Path, demo_data: SequenceData, tmp_path: Path
) -> None:
    settings = TrainSettings(epochs=2, lr=2e-3, batch_size=64, patience=3, seed=42)
    lrurec, data, history = train("lrurec", demo_dir, LRUREC_DEMO, settings, tmp_path)
    popularity = build("popularity", demo_data, demo_dir, {}, seed=42)
    assert len(history) == 2
    assert val_ndcg10(lrurec, data) > val_ndcg10(popularity, demo_data) + 0.2


def expected_random_ndcg10(list_length: int) -> float:
    """NDCG@10 of a target placed uniformly at random in a list of ``list_length``."""
    return sum(1 / math.log2(rank + 1) for rank in range(1, 11)) / list_length


def test_bert4rec_reranks_ground_truth_candidates_better_than_random_and_popularity(
    demo_dir: Path, tmp_path: Path
) -> None:
    settings = TrainSettings(epochs=5, lr=2e-3, batch_size=64, patience=5, seed=42)
    bert4rec, data, _ = train("bert4rec", demo_dir, BERT4REC_DEMO, settings, tmp_path)
    candidates = sample_ground_truth(data, "test", num_negatives=19, seed=42)
    shuffled = evaluate(candidates)["ndcg@10"]
    reranked = evaluate(rerank(bert4rec, data, candidates))["ndcg@10"]
    by_popularity = evaluate(rerank(Popularity.from_data(data), data, candidates))["ndcg@10"]
    assert shuffled == pytest.approx(expected_random_ndcg10(20), abs=0.05)
    assert reranked > shuffled + 0.1
    assert reranked > by_popularity
