"""VIP5 reranker (Geng et al., 2023, "VIP5: Towards Multimodal Foundation Models for
Recommendation"), as its reference implementation (github.com/jeykigung/VIP5) builds it: a frozen
T5 whose joint encoder reads CLIP visual tokens, whole-word and category embeddings, with
parameter-efficient adapters, trained on the published multitask prompts with the seq2seq loss
of the answer text. docs/vip5.md compares it with the reference point by point.

**Prompts.** The published templates of the sequential (A-1 ... A-9) and direct (B-1 ... B-8)
task families (:data:`TEMPLATES`), filled as the reference's data loader fills them: an item is
its id (``item_`` prefixed in B-1/B-2, its title in B-3/B-4) followed by ``image_tokens``
placeholders ``<extra_id_0>`` whose input embeddings are replaced by the item's visual tokens;
the answer is the item's id, or ``yes``/``no``. Training draws a template at random for each
example of each family (the reference's training lists: A-1 ... A-8 and B-1 ... B-7; A-9 and
B-8 are its unseen test prompts).

**Joint encoder.** Input embedding = token embedding (visual tokens in place of their
placeholders) + whole-word embedding (every token of one whitespace-delimited word, such as the
pieces of ``user_1234``, shares the word's ordinal in the prompt; every visual token is a word
of its own; ``</s>`` and padding get 0) + category embedding (0 text, 1 visual). As in the
reference these two tables (1024 and 16 rows) are not trained: they keep their random
initialisation, drawn here from a fixed seed so that every process rebuilds them identically.

**Visual tokens.** An item's CLIP image embedding goes through an MLP (feature -> d*n/2, tanh,
-> d*n) and T5's RMS layer norm over the d*n outputs, then is cut into n = ``image_tokens``
vectors of T5's width.

**Adapters.** One bottleneck adapter (down-projection by ``adapter_reduction``, swish,
up-projection, plus its own skip connection) on the output of every self-attention,
cross-attention and feed-forward sublayer, before T5's dropout and residual add: a T5 layer
computes ``h + dropout(a(f(norm(h))))`` where ``a(y) = y + up(swish(down(y)))``. Trainable: the
adapters, every layer norm (T5's and the visual one) and the visual MLP; the rest is frozen.

**Loss.** ``objective="seq2seq"`` (default, published): the cross-entropy of the answer's
tokens (and ``</s>``), averaged over them and weighted by one over their count, as the
reference's length-aware loss. ``objective="listwise"`` (ours): the cross-entropy of the target
among its pool's candidates under the scores that rank them.

**Scoring.** Each candidate's score is its id's log-likelihood under the ``score_template``
prompt divided by its number of tokens (its id's tokens and ``</s>``): the length-normalised
score by which the reference's beam search ranks its hypotheses, computed exactly for every
candidate instead of for the beams a search keeps. An id of few tokens gets no advantage over a
longer one. Each prompt is encoded once and all its candidates are decoded in one pass.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from seqrerank.batching import index_batches
from seqrerank.candidates import CandidateTraining
from seqrerank.data.dataset import SequenceData
from seqrerank.data.images import ItemImages
from seqrerank.features import ItemFeatures, require_features
from seqrerank.llm.loading import load_t5
from seqrerank.methods.base import Recommender

IMAGE_PLACEHOLDER = "<extra_id_0>"
WHOLE_WORDS = 1024
"""Rows of the whole-word embedding table (the reference's): a prompt has at most 1023 words."""
CATEGORIES = 16
"""Rows of the category embedding table (the reference reserves 16 and uses two)."""
TEXT, VISUAL = 0, 1
EMBEDDING_SEED = 0
"""Seed of the untrained whole-word and category embeddings (not saved: rebuilt from it)."""


@dataclass(frozen=True)
class Template:
    family: Literal["sequential", "direct"]
    source: str
    """Fields: ``user`` (id), ``user_desc``, ``history``, ``item`` (id), ``title``, ``photo``
    (the item's visual placeholders) and ``candidates``."""
    answer: Literal["item", "yes/no"]


# The published prompts (src/all_templates.py of the reference), fields named.
TEMPLATES = {
    "A-1": Template("sequential", "Given the following purchase history of user_{user} : \n {history} \n predict next possible item to be purchased by the user ?", "item"),  # noqa: E501
    "A-2": Template("sequential", "I find the purchase history list of user_{user} : \n {history} \n I wonder what is the next item to recommend to the user . Can you help me decide ?", "item"),  # noqa: E501
    "A-3": Template("sequential", "Here is the purchase history list of user_{user} : \n {history} \n try to recommend next item to the user", "item"),  # noqa: E501
    "A-4": Template("sequential", "Given the following purchase history of {user_desc} : \n {history} \n predict next possible item for the user", "item"),  # noqa: E501
    "A-5": Template("sequential", "Based on the purchase history of {user_desc} : \n {history} \n Can you decide the next item likely to be purchased by the user ?", "item"),  # noqa: E501
    "A-6": Template("sequential", "Here is the purchase history of {user_desc} : \n {history} \n What to recommend next for the user ?", "item"),  # noqa: E501
    "A-7": Template("sequential", "user_{user} has the following purchase history : \n {history} \n does the user likely to buy {item} {photo} next ?", "yes/no"),  # noqa: E501
    "A-8": Template("sequential", "According to {user_desc} 's purchase history list : \n {history} \n Predict whether the user will purchase {item} {photo} next ?", "yes/no"),  # noqa: E501
    "A-9": Template("sequential", "According to the purchase history of {user_desc} : \n {history} \n Can you recommend the next possible item to the user ?", "item"),  # noqa: E501
    "B-1": Template("direct", "Will user_{user} likely to interact with item_{item} {photo} ?", "yes/no"),  # noqa: E501
    "B-2": Template("direct", "Shall we recommend item_{item} {photo} to {user_desc} ?", "yes/no"),
    "B-3": Template("direct", "For {user_desc}, do you think it is good to recommend {title} {photo} ?", "yes/no"),  # noqa: E501
    "B-4": Template("direct", "I would like to recommend some items for user_{user} . Is the following item a good choice ? \n {title} {photo}", "yes/no"),  # noqa: E501
    "B-5": Template("direct", "Which item of the following to recommend for {user_desc} ? \n {candidates}", "item"),  # noqa: E501
    "B-6": Template("direct", "Choose the best item from the candidates to recommend for {user_desc} ? \n {candidates}", "item"),  # noqa: E501
    "B-7": Template("direct", "Pick the most suitable item from the following list and recommend to user_{user} : \n {candidates}", "item"),  # noqa: E501
    "B-8": Template("direct", "We want to make recommendation for user_{user} .  Select the best item from these candidates : \n {candidates}", "item"),  # noqa: E501
}  # fmt: skip
TRAIN_TEMPLATES = ("A-1", "A-2", "A-3", "A-4", "A-5", "A-6", "A-7", "A-8",
                   "B-1", "B-2", "B-3", "B-4", "B-5", "B-6", "B-7")  # fmt: skip
"""The reference's training prompts (A-9 and B-8 are held out for its zero-shot test)."""

# Training examples: (prompt, the items whose visual tokens it holds in order, answer text)
Seq2SeqBatch = tuple[list[str], list[list[int]], list[str]]
# (users, histories, candidate pools, index of the target in each pool)
ListwiseBatch = tuple[list[int], list[np.ndarray], list[np.ndarray], torch.Tensor]


class Adapter(nn.Module):
    """The reference's adapter: ``y + up(swish(down(y)))``, applied to a sublayer's output ``y``
    before the layer's dropout and residual add (PyTorch's default initialisation, as there)."""

    def __init__(self, dim: int, reduction_factor: int):
        super().__init__()
        self.down = nn.Linear(dim, dim // reduction_factor)
        self.up = nn.Linear(dim // reduction_factor, dim)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.up(F.silu(self.down(hidden)))

    def after(self, sublayer: nn.Module) -> None:
        """Apply this adapter to what ``sublayer`` returns (a T5 attention returns its output
        first in a tuple, a feed-forward network alone)."""

        def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
            if isinstance(output, tuple):
                return (self(output[0]), *output[1:])
            return self(output)

        sublayer.register_forward_hook(hook)


class VisualEmbedding(nn.Module):
    """A CLIP embedding -> ``count`` vectors of T5's width: MLP (tanh), then T5's layer norm
    over all ``count * d_model`` outputs, as the reference's ``VisualEmbedding``."""

    def __init__(self, feature_dim: int, d_model: int, count: int, eps: float):
        from transformers.models.t5.modeling_t5 import T5LayerNorm

        super().__init__()
        self.count = count
        self.mlp = nn.Sequential(
            nn.Linear(feature_dim, d_model * count // 2),
            nn.Tanh(),
            nn.Linear(d_model * count // 2, d_model * count),
        )
        self.norm = T5LayerNorm(d_model * count, eps=eps)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """[items, feature_dim] -> [items, count, d_model]."""
        return self.norm(self.mlp(features)).unflatten(-1, (self.count, -1))


class VIP5(Recommender):
    def __init__(
        self,
        num_items: int,
        image_features: torch.Tensor,
        item_titles: Sequence[str] | None,
        model_name: str = "t5-small",
        objective: Literal["seq2seq", "listwise"] = "seq2seq",
        train_templates: Sequence[str] = TRAIN_TEMPLATES,
        score_template: str = "A-3",
        max_history: int = 10,
        max_candidates: int | None = None,
        image_tokens: int = 2,
        adapter_reduction: int = 8,
        score_batch_size: int = 16,
        train_users_per_epoch: int | None = None,
        prompts_per_family: int = 1,
    ):
        """``image_features`` [num_items + 1, dim] are the items' CLIP image embeddings (zeros
        for an item without an image). ``item_titles`` (indexed by item id; None when there are
        none) fill the title prompts B-3 and B-4 (``unknown title`` where empty, as the
        reference). ``train_templates`` are the prompts the seq2seq objective trains on, a
        template drawn at random for each example of each of their families; the listwise one
        trains on ``score_template``, the item-answer prompt that scoring reads. ``max_candidates``
        caps the candidates of a pool (all when None): a training pool is the target and that
        many minus one of the list's other items, and scoring scores the first
        ``max_candidates`` of each list, those after them keeping their incoming order below.
        ``train_users_per_epoch`` trains each epoch on that many users drawn afresh (all when
        None), each with ``prompts_per_family`` seq2seq examples of each family (the reference
        draws 10: 5 for each of its two groups of templates of a family)."""
        super().__init__()
        unknown = sorted({*train_templates, score_template} - set(TEMPLATES))
        if unknown:
            raise ValueError(f"unknown VIP5 template(s) {unknown}; templates: {list(TEMPLATES)}")
        if TEMPLATES[score_template].answer != "item":
            answers_item = [name for name, t in TEMPLATES.items() if t.answer == "item"]
            raise ValueError(
                f"score_template {score_template} answers yes/no; a scoring template answers "
                f"with an item: one of {answers_item}"
            )
        if objective not in ("seq2seq", "listwise"):
            raise ValueError(f"objective must be seq2seq or listwise, not {objective!r}")
        self.objective = objective
        self.train_templates = tuple(train_templates)
        self.score_template = score_template
        self.max_history = max_history
        self.max_candidates = max_candidates
        self.score_batch_size = score_batch_size
        self.train_users_per_epoch = train_users_per_epoch
        self.prompts_per_family = prompts_per_family
        self.item_titles = list(item_titles) if item_titles is not None else None
        self.t5, self.tokenizer = load_t5(model_name)
        if not self.tokenizer.is_fast:
            raise ValueError(
                f"{model_name}'s tokenizer is not a fast one (whole words need offsets)"
            )
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER)
        if self.image_token_id == self.tokenizer.unk_token_id:
            raise ValueError(f"{model_name}'s tokenizer has no {IMAGE_PLACEHOLDER} token")
        self.photo = " ".join([IMAGE_PLACEHOLDER] * image_tokens)

        from transformers.models.t5.modeling_t5 import (
            T5LayerCrossAttention,
            T5LayerFF,
            T5LayerNorm,
            T5LayerSelfAttention,
        )

        config = self.t5.config
        self.t5.requires_grad_(False)
        for module in self.t5.modules():
            if isinstance(module, T5LayerNorm):
                module.requires_grad_(True)
        inner = {
            T5LayerSelfAttention: "SelfAttention",
            T5LayerCrossAttention: "EncDecAttention",
            T5LayerFF: "DenseReluDense",
        }
        blocks = [*self.t5.encoder.block, *self.t5.decoder.block]
        sublayers = [
            getattr(layer, inner[type(layer)]) for block in blocks for layer in block.layer
        ]
        self.adapters = nn.ModuleList(Adapter(config.d_model, adapter_reduction) for _ in sublayers)
        for adapter, sublayer in zip(self.adapters, sublayers, strict=True):
            adapter.after(sublayer)
        self.visual = VisualEmbedding(
            image_features.shape[1], config.d_model, image_tokens, config.layer_norm_epsilon
        )
        # Untrained, as in the reference (nn.Embedding's N(0, 1)), from a fixed seed: not saved.
        seeded = torch.Generator().manual_seed(EMBEDDING_SEED)
        self.whole_word_embeddings = nn.Embedding(WHOLE_WORDS, config.d_model)
        self.category_embeddings = nn.Embedding(CATEGORIES, config.d_model)
        for table in (self.whole_word_embeddings, self.category_embeddings):
            table.weight.requires_grad_(False)
            with torch.no_grad():
                table.weight.copy_(torch.randn(table.weight.shape, generator=seeded))

        # Not saved with the model: rebuilt from the feature file and the tokenizer.
        self.register_buffer("image_features", image_features.float(), persistent=False)
        self.register_buffer("item_labels", self._id_labels(num_items), persistent=False)

    @classmethod
    def from_data(
        cls,
        data: SequenceData,
        items: pd.DataFrame | None = None,
        features: Mapping[str, ItemFeatures] | None = None,
        images: ItemImages | None = None,
        **params: Any,
    ) -> VIP5:
        image = require_features(cls.__name__, features, modalities=("image",))["image"]
        titles = None
        if items is not None and "title" in items:
            index = range(data.num_items + 1)
            titles = items["title"].astype(str).reindex(index, fill_value="").tolist()
        return cls(data.num_items, image.values, titles, **params)

    def _id_labels(self, num_items: int) -> torch.Tensor:
        """Decoder targets [num_items + 1, length]: each item's answer text (its id) in tokens
        and ``</s>``, padded with -100 (ignored by the loss)."""
        texts = [str(item) for item in range(num_items + 1)]
        encoded = self.tokenizer(texts, padding=True, return_tensors="pt")
        return encoded.input_ids.masked_fill(encoded.attention_mask == 0, -100)

    # ---- prompts ---------------------------------------------------------------------------

    def prompt(
        self,
        template: str,
        user: int,
        history: Sequence[int] = (),
        candidates: Sequence[int] = (),
        item: int | None = None,
        arrows: bool = False,
    ) -> tuple[str, list[int]]:
        """The prompt of ``template`` and the items whose visual tokens it holds, in order. The
        history lists its items as the reference does (``5 <photo> , 71 <photo>``, or with
        ``->`` between them when ``arrows``); ``candidates`` likewise with commas; ``item`` is
        the one item of a yes/no prompt."""

        def listed(items: Sequence[int], separator: str) -> str:
            return f" {separator} ".join(f"{i} {self.photo}" for i in items)

        source = TEMPLATES[template].source
        shown: list[int] = []
        fields: dict[str, Any] = {"user": user, "user_desc": f"user_{user}"}
        if "{history}" in source:
            fields["history"] = listed(history, "->" if arrows else ",")
            shown += [int(i) for i in history]
        if "{item}" in source or "{title}" in source:
            assert item is not None, f"template {template} shows an item"
            fields.update(item=item, photo=self.photo, title=self._title(item))
            shown.append(int(item))
        if "{candidates}" in source:
            fields["candidates"] = listed(candidates, ",")
            shown += [int(i) for i in candidates]
        return source.format(**fields), shown

    def _title(self, item: int) -> str:
        title = self.item_titles[item] if self.item_titles is not None else ""
        return title or "unknown title"

    def scoring_prompts(
        self, users: Sequence[int], histories: Sequence[np.ndarray], pools: Sequence[np.ndarray]
    ) -> tuple[list[str], list[list[int]]]:
        """The ``score_template`` prompts of the users (a history prompt, or one that lists the
        pool), with their most recent ``max_history`` items."""
        prompts = [
            self.prompt(self.score_template, int(user), history[-self.max_history :], pool)
            for user, history, pool in zip(users, histories, pools, strict=True)
        ]
        return [text for text, _ in prompts], [shown for _, shown in prompts]

    # ---- the joint encoder -----------------------------------------------------------------

    def embed(
        self, sources: Sequence[str], shown: Sequence[Sequence[int]]
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """The joint encoder's input embeddings [batch, length, d_model] of the prompts (token
        embeddings with the items' visual tokens in place of their placeholders, plus whole-word
        and category embeddings), the padding mask [batch, length], and the token, whole-word
        and category ids."""
        tokens = self.tokenizer(
            list(sources), padding=True, return_tensors="pt", return_offsets_mapping=True
        )
        ids = tokens.input_ids
        words = torch.tensor(
            [
                whole_word_ids(text, offsets, row, self.image_token_id, self._no_word_ids)
                for text, offsets, row in zip(
                    sources, tokens.offset_mapping.tolist(), ids.tolist(), strict=True
                )
            ]
        )
        if int(words.max()) >= WHOLE_WORDS:
            raise ValueError(
                f"a VIP5 prompt has {int(words.max())} words; the whole-word embeddings hold "
                f"{WHOLE_WORDS - 1} (lower max_history or max_candidates)"
            )
        is_visual = ids == self.image_token_id
        categories = is_visual.long() * VISUAL
        device = self.item_labels.device  # where the model's weights are
        ids, words, categories = ids.to(device), words.to(device), categories.to(device)
        is_visual = is_visual.to(device)
        embeddings = self.t5.get_input_embeddings()(ids)
        items = torch.as_tensor([i for row in shown for i in row], dtype=torch.long, device=device)
        visual = self.visual(self.image_features[items]).to(embeddings.dtype)
        if int(is_visual.sum()) != visual.shape[0] * visual.shape[1]:
            raise ValueError(f"the tokenizer split the image placeholder {IMAGE_PLACEHOLDER}")
        embeddings = embeddings.masked_scatter(is_visual[..., None], visual)
        embeddings = (
            embeddings + self.whole_word_embeddings(words) + self.category_embeddings(categories)
        )
        mask = tokens.attention_mask.to(device)
        return (
            embeddings,
            mask,
            {"input_ids": ids, "whole_word_ids": words, "category_ids": categories},
        )

    @property
    def _no_word_ids(self) -> set[int]:
        """Tokens without a word (whole-word id 0): ``</s>`` and padding, as in the reference."""
        return {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}

    def encode(
        self, sources: Sequence[str], shown: Sequence[Sequence[int]]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Encoder states [batch, length, d_model] of the prompts and their additive padding
        mask (None without padding)."""
        embeddings, padding, _ = self.embed(sources, shown)
        # Any padding mask costs a [batch, heads, length, length] tensor per attention layer (T5's
        # position bias plus the mask), so a batch of prompts of one length gets none. Otherwise
        # the mask is additive: a boolean one also costs a select and a copy of that tensor.
        mask = None
        if not padding.all():
            mask = additive_mask(padding[:, None, None, :] == 1, embeddings.dtype)
        states = self.t5.encoder(inputs_embeds=embeddings, attention_mask=mask)
        return states.last_hidden_state, mask

    # ---- candidate scores ------------------------------------------------------------------

    def log_likelihoods(
        self, states: torch.Tensor, mask: torch.Tensor | None, pools: Sequence[np.ndarray]
    ) -> torch.Tensor:
        """Each pool item's length-normalised log-likelihood (its id's token log-probabilities
        and ``</s>``'s, averaged), [batch, max pool size], -inf past a pool's end.

        A prompt's candidates are decoded side by side in one decoder sequence, each id in its
        own block that attends only to itself (causally): T5's decoder position bias depends on
        the distance between tokens, which a block keeps, and its cross-attention has none, so
        each block reads the prompt exactly as if decoded alone. The encoder states are used
        once per prompt instead of being copied for each candidate."""
        pool_mask = _pool_mask(pools).to(states.device)
        items = torch.as_tensor(np.concatenate(pools), device=states.device)
        labels = self.item_labels[items]
        labels = labels[:, : int((labels != -100).sum(1).max())]
        inputs = self.t5.prepare_decoder_input_ids_from_labels(labels)
        blocks, width = pool_mask.shape[1], labels.shape[1]
        laid_out_labels = labels.new_full((len(pools), blocks, width), -100)
        laid_out_labels[pool_mask] = labels
        laid_out_inputs = inputs.new_full((len(pools), blocks, width), self.tokenizer.pad_token_id)
        laid_out_inputs[pool_mask] = inputs

        position = torch.arange(blocks * width, device=states.device)
        block = position // width
        visible = (block[:, None] == block[None, :]) & (position[None, :] <= position[:, None])
        logits = self.t5(
            encoder_outputs=(states,),
            attention_mask=mask,
            decoder_input_ids=laid_out_inputs.flatten(1),
            decoder_attention_mask=additive_mask(visible[None, None], states.dtype),
            use_cache=False,
        ).logits
        token_nll = F.cross_entropy(
            logits.flatten(0, 1).float(), laid_out_labels.flatten(), reduction="none"
        ).view(len(pools), blocks, width)
        lengths = (laid_out_labels != -100).sum(-1).clamp(min=1)
        scores = -token_nll.sum(-1) / lengths
        return scores.masked_fill(~pool_mask, float("-inf"))

    # ---- training --------------------------------------------------------------------------

    def training_batches(
        self, task: CandidateTraining, batch_size: int, generator: torch.Generator
    ) -> Iterator[Seq2SeqBatch | ListwiseBatch]:
        examples = task.examples(self.max_candidates or task.lists.items.shape[1], generator)
        users = task.lists.users.tolist()
        chosen = torch.arange(len(examples))
        if self.train_users_per_epoch is not None:
            chosen = torch.randperm(len(examples), generator=generator)
            chosen = chosen[: self.train_users_per_epoch]
        if self.objective == "listwise":
            for idx in index_batches(len(chosen), batch_size, generator):
                rows = chosen[idx].tolist()
                yield (
                    [users[row] for row in rows],
                    [examples[row][0] for row in rows],
                    [examples[row][1] for row in rows],
                    torch.tensor([examples[row][2] for row in rows]),
                )
            return
        drawn = [
            self.training_example(template, users[row], *examples[row], generator)
            for row in chosen.tolist()
            for _ in range(self.prompts_per_family)
            for template in self._draw_templates(generator)
        ]
        for idx in index_batches(len(drawn), batch_size, generator):
            picked = [drawn[i] for i in idx.tolist()]
            yield ([p[0] for p in picked], [p[1] for p in picked], [p[2] for p in picked])

    def _draw_templates(self, generator: torch.Generator) -> list[str]:
        """One template of each family of ``train_templates``, drawn uniformly."""
        drawn = []
        for family in ("sequential", "direct"):
            names = [name for name in self.train_templates if TEMPLATES[name].family == family]
            if names:
                drawn.append(names[int(torch.randint(len(names), (1,), generator=generator))])
        return drawn

    def training_example(
        self,
        template: str,
        user: int,
        history: np.ndarray,
        pool: np.ndarray,
        answer: int,
        generator: torch.Generator,
    ) -> tuple[str, list[int], str]:
        """(prompt, its items, answer text) of ``template`` for a user whose target is
        ``pool[answer]``: the target's id, or for a yes/no prompt, with even odds, the target
        and ``yes`` or another item of the pool and ``no`` (the reference draws that item from
        the items the user never interacted with: the random negatives of a ground-truth
        list). A history is listed with commas or arrows at random, as there."""
        coin = torch.rand(2, generator=generator).tolist()
        target = int(pool[answer])
        item, text = None, str(target)
        if TEMPLATES[template].answer == "yes/no":
            others = np.delete(pool, answer)
            if coin[0] > 0.5 or len(others) == 0:
                item, text = target, "yes"
            else:
                pick = int(torch.randint(len(others), (1,), generator=generator))
                item, text = int(others[pick]), "no"
        source, shown = self.prompt(
            template, user, history[-self.max_history :], pool, item, arrows=coin[1] > 0.5
        )
        return source, shown, text

    def loss(self, batch: Seq2SeqBatch | ListwiseBatch) -> torch.Tensor:
        if self.objective == "listwise":
            return self.listwise_loss(batch)  # type: ignore[arg-type]
        return self.seq2seq_loss(batch)  # type: ignore[arg-type]

    def seq2seq_loss(self, batch: Seq2SeqBatch) -> torch.Tensor:
        """The reference's loss: per example, the answer tokens' mean cross-entropy (``</s>``
        included) weighted by one over their count; the mean over the batch."""
        sources, shown, answers = batch
        states, mask = self.encode(sources, shown)
        encoded = self.tokenizer(list(answers), padding=True, return_tensors="pt")
        labels = encoded.input_ids.masked_fill(encoded.attention_mask == 0, -100)
        labels = labels.to(states.device)
        logits = self.t5(encoder_outputs=(states,), attention_mask=mask, labels=labels).logits
        token_nll = F.cross_entropy(
            logits.flatten(0, 1).float(), labels.flatten(), reduction="none"
        ).view(labels.shape)
        lengths = (labels != -100).sum(1).clamp(min=1)
        return (token_nll.sum(1) / lengths / lengths).mean()

    def listwise_loss(self, batch: ListwiseBatch) -> torch.Tensor:
        """Ours: the cross-entropy of the target among its pool's candidates under the scores
        that rank them (``score_template``, length-normalised)."""
        users, histories, pools, answers = batch
        states, mask = self.encode(*self.scoring_prompts(users, histories, pools))
        scores = self.log_likelihoods(states, mask, pools)
        return F.cross_entropy(scores, answers.to(scores.device))

    # ---- scoring ---------------------------------------------------------------------------

    def score_candidates(
        self, users: torch.Tensor, histories: torch.Tensor, candidates: torch.Tensor
    ) -> torch.Tensor:
        """Each candidate's length-normalised id log-likelihood under ``score_template``; -inf
        for padding (item 0) and for candidates beyond ``max_candidates``."""
        # Prompts are built from item ids on the CPU; the scores go back where the ids came from.
        scored, histories = candidates[:, : self.max_candidates].cpu(), histories.cpu()
        scores = torch.full(candidates.shape, float("-inf"))
        for start in range(0, len(candidates), self.score_batch_size):
            rows = slice(start, start + self.score_batch_size)
            pools = [row[row > 0].numpy() for row in scored[rows]]
            shown = [row[row > 0].numpy() for row in histories[rows]]
            states, mask = self.encode(*self.scoring_prompts(users[rows].tolist(), shown, pools))
            pool_scores = self.log_likelihoods(states, mask, pools)
            scores[rows, : scored.shape[1]][scored[rows] > 0] = pool_scores.cpu()[_pool_mask(pools)]
        return scores.to(candidates.device)

    # ---- checkpoints: what trains ----------------------------------------------------------

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """The adapters, layer norms and visual MLP; the frozen T5 is rebuilt from its name, the
        untrained whole-word and category embeddings from their seed."""
        return {
            name: parameter.detach().cpu()
            for name, parameter in self.named_parameters()
            if parameter.requires_grad
        }

    def load_state_dict(
        self, state_dict: Mapping[str, torch.Tensor], strict: bool = True, **_: Any
    ):
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        if strict and set(state_dict) != trainable:
            raise KeyError(
                "the checkpoint does not hold this model's trainable weights: missing "
                f"{sorted(trainable - set(state_dict))}, unexpected "
                f"{sorted(set(state_dict) - trainable)}"
            )
        return super().load_state_dict(state_dict, strict=False)


def whole_word_ids(
    text: str,
    offsets: Sequence[Sequence[int]],
    token_ids: Sequence[int],
    image_token_id: int,
    no_word: set[int],
) -> list[int]:
    """The whole-word id of each token of ``text``: the ordinal (from 1) of the
    whitespace-delimited word the token starts or continues, each image placeholder a word of
    its own, 0 for the tokens of ``no_word`` (``</s>``, padding). For a SentencePiece tokenizer
    this is the reference's rule (a new word at every ``▁`` piece and at every placeholder),
    read from character offsets so that it holds for any fast tokenizer."""
    out, word, end = [], 0, 0
    for (start, stop), token in zip(offsets, token_ids, strict=True):
        if token in no_word:
            out.append(0)
            continue
        gap = text[end:start] + text[start:stop][:1]
        if word == 0 or token == image_token_id or any(c.isspace() for c in gap):
            word += 1
        out.append(word)
        end = max(end, stop)
    return out


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An attention mask that transformers adds to the scores: 0 where ``allowed``, else the
    lowest ``dtype`` value."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
        ~allowed, torch.finfo(dtype).min
    )


def _pool_mask(pools: Sequence[np.ndarray]) -> torch.Tensor:
    """[batch, max pool size]: True where a pool has an item."""
    sizes = torch.tensor([len(pool) for pool in pools])
    return torch.arange(int(sizes.max())) < sizes[:, None]
