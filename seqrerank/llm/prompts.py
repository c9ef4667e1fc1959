"""LlamaRec-style ranking prompts, assembled from token ids, and the index labels they use.

A prompt lists the user's recent items in chronological order and the candidate pool, each
candidate behind an index label; the model answers with one label. Labels are chosen so that each
is a single token of the model's tokenizer (A..Z, then two-letter labels such as ``AB``), so one
forward pass scores every candidate by its label's logit at the answer position, for any pool
size up to the number of such labels (578 in the Qwen vocabulary).

Prompts are concatenated from pre-tokenized pieces instead of tokenizing a string per user. Every
piece starts after a newline, a special token or punctuation, where the tokenizer's
pre-tokenization splits anyway, so the ids equal those of tokenizing the whole text.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

SYSTEM_PROMPT = (
    "Given the user's history in chronological order, recommend the item the user will "
    "interact with next from the candidate pool. Answer with the item's index label only."
)
BODY_MARKER = "<<prompt body>>"


def label_names(tokenizer, count: int) -> list[str]:
    """The first ``count`` index labels that the tokenizer encodes as one token each."""
    letters = string.ascii_uppercase
    names = []
    for name in [*letters, *(a + b for a in letters for b in letters)]:
        if len(tokenizer.encode(name, add_special_tokens=False)) == 1:
            names.append(name)
            if len(names) == count:
                return names
    raise ValueError(
        f"the tokenizer has only {len(names)} single-token index labels, fewer than the "
        f"{count} candidates asked for; lower max_candidates (qwen_max_candidates) to "
        f"{len(names)} or less"
    )


@dataclass
class Prompt:
    ids: list[int]
    images: list[int] = field(default_factory=list)
    """Items whose image appears in the prompt, in order (vision models only)."""


class PromptBuilder:
    """Token ids of ranking prompts for one model's tokenizer and chat template."""

    def __init__(
        self,
        tokenizer,
        item_texts: Sequence[str],
        max_candidates: int,
        max_history: int,
        max_item_tokens: int,
        image_tokens: Callable[[int], list[int]] | None = None,
    ):
        """``item_texts[i]`` describes item ``i`` (index 0 is padding); ``image_tokens(item)``,
        when given, are the placeholder ids of the item's image (none for an item without one),
        placed after its text."""
        self.max_history = max_history
        self.image_tokens = image_tokens

        def encode(text: str) -> list[int]:
            return tokenizer.encode(text, add_special_tokens=False)

        chat = tokenizer.apply_chat_template(
            [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": BODY_MARKER},
            ],
            add_generation_prompt=True,
            tokenize=False,
            enable_thinking=False,  # Qwen3: answer at once (ignored by other templates)
        )
        prefix, suffix = chat.split(BODY_MARKER)
        self.prefix = encode(prefix) + encode("User history:\n")
        self.pool_header = encode("Candidate pool:\n")
        self.suffix = encode(suffix)
        self.bullet, self.dot, self.newline = encode("-"), encode("."), encode("\n")
        self.labels = [encode(name)[0] for name in label_names(tokenizer, max_candidates)]
        # " text" as the tokenizer sees it after "-" or ".", cut to max_item_tokens and then
        # stripped, since a trailing space would merge with the newline that follows.
        self.item_tokens = [
            encode(tokenizer.decode(encode(" " + clean_text(text))[:max_item_tokens]).rstrip())
            for text in item_texts
        ]

    def build(self, history: Sequence[int], candidates: Sequence[int]) -> Prompt:
        """The prompt for a history (oldest first; the last ``max_history`` items are shown)
        and candidates, labelled in the order given; the answer is the next token."""
        prompt = Prompt(list(self.prefix))
        for item in list(history)[-self.max_history :]:
            self._add_line(prompt, self.bullet, item)
        prompt.ids += self.pool_header
        for label, item in zip(self.labels, candidates, strict=False):
            self._add_line(prompt, [label, *self.dot], item)
        prompt.ids += self.suffix
        return prompt

    def _add_line(self, prompt: Prompt, head: list[int], item: int) -> None:
        prompt.ids += head + self.item_tokens[item]
        image = self.image_tokens(item) if self.image_tokens is not None else []
        if image:
            prompt.ids += image
            prompt.images.append(item)
        prompt.ids += self.newline


def clean_text(text: str) -> str:
    """One line without outer spaces, so a piece ends where the tokenizer splits anyway."""
    return re.sub(r"\s+", " ", str(text)).strip()
