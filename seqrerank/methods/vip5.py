"""VIP5 reranker (Geng et al., 2023): a frozen T5 with adapters and CLIP visual tokens.

An item appears in the prompt as its id text (``item_123``) followed by visual tokens: its CLIP
image embedding through a small MLP and a LayerNorm gives ``image_tokens`` vectors (2 by
default), which take the places of ``<extra_id_0>`` placeholders in the encoder's input
embeddings. The direct-recommendation prompt names the user, their last ``max_history`` items
and the candidates, each with its visual tokens; the answer is the chosen item's id text.

A candidate's score is the decoder's log-likelihood of its id text, summed over its tokens and
``</s>`` (so an id does not win over the longer ids that it is a prefix of): each prompt is
encoded once and all its candidates are decoded in one pass. Nothing is generated or parsed.
Training minimises the cross-entropy of the target among the pool's candidates under the same
scores (the target and sampled negatives, in a fresh order every epoch), so training ranks
exactly as scoring does.

The T5 weights are frozen; what trains is a bottleneck adapter after every attention,
cross-attention and feed-forward sublayer, every T5 layer norm, and the visual MLP and its
LayerNorm. Only those are saved: the backbone is loaded again by its name or path, so a
checkpoint is small even for t5-base.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

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
PROMPT = (
    "user_{user} has bought {history}. Pick the most suitable item from the candidates to "
    "recommend to user_{user} next: {candidates}"
)

# (users, histories, candidate pools, index of the target in each pool)
Batch = tuple[list[int], list[np.ndarray], list[np.ndarray], torch.Tensor]


class Adapter(nn.Module):
    """A bottleneck with a residual connection; it starts as the identity (zero up-projection),
    so training begins from the backbone's own function."""

    def __init__(self, dim: int, reduction_factor: int):
        super().__init__()
        self.down = nn.Linear(dim, dim // reduction_factor)
        self.up = nn.Linear(dim // reduction_factor, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.up(F.relu(self.down(hidden)))

    def after(self, sublayer: nn.Module) -> None:
        """Apply this adapter to the hidden states that ``sublayer`` returns (a T5 attention
        sublayer returns them first in a tuple, a feed-forward one alone)."""

        def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
            if isinstance(output, tuple):
                return (self(output[0]), *output[1:])
            return self(output)

        sublayer.register_forward_hook(hook)


class VisualTokens(nn.Module):
    """A CLIP embedding -> ``count`` vectors in T5's embedding space (MLP, then LayerNorm)."""

    def __init__(self, feature_dim: int, d_model: int, count: int):
        super().__init__()
        self.count = count
        self.mlp = nn.Sequential(
            nn.Linear(feature_dim, d_model), nn.ReLU(), nn.Linear(d_model, count * d_model)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """[items, feature_dim] -> [items, count, d_model]."""
        return self.norm(self.mlp(features).unflatten(-1, (self.count, -1)))


class VIP5(Recommender):
    def __init__(
        self,
        num_items: int,
        image_features: torch.Tensor,
        model_name: str = "t5-small",
        max_history: int = 10,
        max_candidates: int | None = None,
        image_tokens: int = 2,
        adapter_reduction: int = 8,
        score_batch_size: int = 16,
        train_users_per_epoch: int | None = None,
    ):
        """``image_features`` [num_items + 1, dim] are the items' CLIP image embeddings (zeros
        for an item without an image, which then gets the MLP's image-less tokens).
        ``max_candidates`` caps the candidates of a prompt (all when None): a training example
        is the target and that many minus one of the list's other items, and scoring scores the
        first ``max_candidates`` of each list, those after them keeping their incoming order
        below. ``train_users_per_epoch`` trains each epoch on that many users drawn afresh (all
        users when None); validation and evaluation score every user."""
        super().__init__()
        self.max_history = max_history
        self.max_candidates = max_candidates
        self.score_batch_size = score_batch_size
        self.train_users_per_epoch = train_users_per_epoch
        self.t5, self.tokenizer = load_t5(model_name)
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER)
        if self.image_token_id == self.tokenizer.unk_token_id:
            raise ValueError(f"{model_name}'s tokenizer has no {IMAGE_PLACEHOLDER} token")
        self.item_placeholders = IMAGE_PLACEHOLDER * image_tokens

        from transformers.models.t5.modeling_t5 import T5LayerNorm

        self.t5.requires_grad_(False)
        for module in self.t5.modules():
            if isinstance(module, T5LayerNorm):
                module.requires_grad_(True)
        d_model = self.t5.config.d_model
        blocks = [*self.t5.encoder.block, *self.t5.decoder.block]
        sublayers = [sublayer for block in blocks for sublayer in block.layer]
        self.adapters = nn.ModuleList(Adapter(d_model, adapter_reduction) for _ in sublayers)
        for adapter, sublayer in zip(self.adapters, sublayers, strict=True):
            adapter.after(sublayer)
        self.visual = VisualTokens(image_features.shape[1], d_model, image_tokens)

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
        return cls(data.num_items, image.values, **params)

    def _id_labels(self, num_items: int) -> torch.Tensor:
        """Decoder targets [num_items + 1, length]: each item's id tokens and ``</s>``, padded
        with -100 (ignored by the loss)."""
        texts = [f"item_{item}" for item in range(num_items + 1)]
        encoded = self.tokenizer(texts, padding=True, return_tensors="pt")
        return encoded.input_ids.masked_fill(encoded.attention_mask == 0, -100)

    # ---- the model -------------------------------------------------------------------------

    def prompt(self, user: int, history: Sequence[int], candidates: Sequence[int]) -> str:
        def listed(items: Sequence[int]) -> str:
            return ", ".join(f"item_{item} {self.item_placeholders}" for item in items)

        return PROMPT.format(user=user, history=listed(history), candidates=listed(candidates))

    def encode(
        self, users: Sequence[int], histories: Sequence[np.ndarray], pools: Sequence[np.ndarray]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Encoder states [batch, length, d_model] of the users' prompts, with every item's
        visual tokens in place of its placeholders, and their padding mask (None without
        padding)."""
        shown = [history[-self.max_history :] for history in histories]
        texts = [self.prompt(*row) for row in zip(users, shown, pools, strict=True)]
        tokens = self.tokenizer(texts, padding=True, return_tensors="pt")
        tokens = tokens.to(self.item_labels.device)  # where the model's weights are
        embeddings = self.t5.get_input_embeddings()(tokens.input_ids)
        items = np.concatenate([np.concatenate([h, p]) for h, p in zip(shown, pools, strict=True)])
        visual = self.visual(self.image_features[torch.as_tensor(items, device=embeddings.device)])
        is_visual = tokens.input_ids == self.image_token_id
        if int(is_visual.sum()) != visual.shape[0] * visual.shape[1]:
            raise ValueError(f"the tokenizer split the image placeholder {IMAGE_PLACEHOLDER}")
        embeddings = embeddings.masked_scatter(is_visual[..., None], visual.to(embeddings.dtype))
        # Any padding mask costs a [batch, heads, length, length] tensor per attention layer (T5's
        # position bias plus the mask), so a batch of prompts of one length gets none. Otherwise
        # the mask is additive: a boolean one also costs a select and a copy of that tensor.
        mask = None
        if not tokens.attention_mask.all():
            mask = additive_mask(tokens.attention_mask[:, None, None, :] == 1, embeddings.dtype)
        states = self.t5.encoder(inputs_embeds=embeddings, attention_mask=mask)
        return states.last_hidden_state, mask

    def log_likelihoods(
        self, states: torch.Tensor, mask: torch.Tensor | None, pools: Sequence[np.ndarray]
    ) -> torch.Tensor:
        """The decoder's log-likelihood of each pool item's id text, [batch, max pool size],
        -inf past a pool's end.

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
        )
        scores = -token_nll.view(len(pools), blocks, width).sum(-1)
        return scores.masked_fill(~pool_mask, float("-inf"))

    # ---- training --------------------------------------------------------------------------

    def training_batches(
        self, task: CandidateTraining, batch_size: int, generator: torch.Generator
    ) -> Iterator[Batch]:
        examples = task.examples(self.max_candidates or task.lists.items.shape[1], generator)
        users = task.lists.users.tolist()
        chosen = torch.arange(len(examples))
        if self.train_users_per_epoch is not None:
            chosen = torch.randperm(len(examples), generator=generator)
            chosen = chosen[: self.train_users_per_epoch]
        for idx in index_batches(len(chosen), batch_size, generator):
            rows = chosen[idx].tolist()
            yield (
                [users[row] for row in rows],
                [examples[row][0] for row in rows],
                [examples[row][1] for row in rows],
                torch.tensor([examples[row][2] for row in rows]),
            )

    def loss(self, batch: Batch) -> torch.Tensor:
        """Cross-entropy of the target among its pool's candidates, under the scores that
        rank them (the log-likelihoods of their ids)."""
        users, histories, pools, answers = batch
        scores = self.log_likelihoods(*self.encode(users, histories, pools), pools)
        return F.cross_entropy(scores, answers.to(scores.device))

    # ---- scoring ---------------------------------------------------------------------------

    def score_candidates(
        self, users: torch.Tensor, histories: torch.Tensor, candidates: torch.Tensor
    ) -> torch.Tensor:
        """Each candidate's id log-likelihood; -inf for padding (item 0) and for candidates
        beyond ``max_candidates``."""
        # Prompts are built from item ids on the CPU; the scores go back where the ids came from.
        scored, histories = candidates[:, : self.max_candidates].cpu(), histories.cpu()
        scores = torch.full(candidates.shape, float("-inf"))
        for start in range(0, len(candidates), self.score_batch_size):
            rows = slice(start, start + self.score_batch_size)
            pools = [row[row > 0].numpy() for row in scored[rows]]
            shown = [row[row > 0].numpy() for row in histories[rows]]
            states, mask = self.encode(users[rows].tolist(), shown, pools)
            pool_scores = self.log_likelihoods(states, mask, pools)
            scores[rows, : scored.shape[1]][scored[rows] > 0] = pool_scores.cpu()[_pool_mask(pools)]
        return scores.to(candidates.device)

    # ---- checkpoints: what trains ----------------------------------------------------------

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """The adapters, layer norms and visual MLP; the frozen T5 is rebuilt from its name."""
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
