"""Loading pretrained weights, the one place that does: a language model by name with a LoRA
adapter, and the T5 backbone of VIP5.

The same call serves a tiny model on a CPU and a real Qwen on a GPU node: ``model_name`` is a
hub id or a local checkpoint folder (``Qwen/Qwen2.5-1.5B-Instruct``,
``/models/Qwen3-VL-2B-Instruct``, the demo's ``results/models/tiny-qwen3`` written by
:mod:`seqrerank.llm.tiny`). The weights go to the job's device as they load
(:func:`seqrerank.distributed.device`): a model in 4 bits cannot be moved afterwards. Unsloth and
bitsandbytes are optional: they are imported only when the ``loader``/``use_quantization`` options
ask for them, so the CPU environment never needs them (Unsloth cannot share an environment with
transformers 5).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from typing import Any, Literal

import torch

from seqrerank.distributed import device
from seqrerank.hub import from_cache

log = logging.getLogger(__name__)

Loader = Literal["auto", "transformers", "unsloth"]


@dataclass(frozen=True)
class LoadSettings:
    model_name: str
    vision: bool = False
    """An image-text model (Qwen3-VL) rather than a causal LM."""
    loader: Loader = "auto"
    """``unsloth`` (its fast kernels), ``transformers`` (plain, CPU or GPU), or ``auto``: Unsloth
    when it is installed, a GPU is present and the job runs in one process (Unsloth under
    DistributedDataParallel is untested here: ask for it by name)."""
    use_quantization: bool = False
    """Load the base model in 4 bits (bitsandbytes NF4, or Unsloth's), GPU only."""
    use_torch_compile: bool = False
    lora_rank: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: tuple[str, ...] = ("q_proj", "v_proj")


def uses_unsloth(loader: Loader) -> bool:
    installed = importlib.util.find_spec("unsloth") is not None
    if loader == "unsloth" and not installed:
        raise ImportError(
            "loader 'unsloth' needs the unsloth package, which is not installed in this "
            "environment (it needs its own, see docs/llm-rerankers.md); use loader 'transformers'"
        )
    one_process = int(os.environ.get("WORLD_SIZE", 1)) == 1  # torchrun's
    return loader == "unsloth" or (
        loader == "auto" and installed and torch.cuda.is_available() and one_process
    )


def load_pretrained(settings: LoadSettings) -> tuple[Any, Any]:
    """The base model, on the GPU when there is one, and its tokenizer or processor, padding
    on the left (so that in a batch every prompt ends at the last position)."""
    if uses_unsloth(settings.loader):
        import unsloth  # noqa: F401 - patches transformers, so it comes first

        with from_cache(settings.model_name):
            model, processor = _unsloth_class(settings).from_pretrained(
                settings.model_name,
                load_in_4bit=settings.use_quantization,
                device_map={"": torch.cuda.current_device()},
            )
        log.info("loaded %s with Unsloth", settings.model_name)
    else:
        model, processor = _load_transformers(settings)
    getattr(processor, "tokenizer", processor).padding_side = "left"
    if settings.use_torch_compile:
        from torch._inductor import config as inductor_config

        inductor_config.deterministic = torch.are_deterministic_algorithms_enabled()
        # The rerankers call the decoder stack (model.model) directly, not the LM around it;
        # generation reaches it through the LM, so compiling it serves both.
        getattr(model, "model", model).compile()
    return model, processor


def load_with_lora(settings: LoadSettings) -> tuple[Any, Any]:
    """:func:`load_pretrained` plus a fresh LoRA adapter: only the adapter trains."""
    model, processor = load_pretrained(settings)
    lora = dict(
        r=settings.lora_rank,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=list(settings.lora_target_modules),
    )
    if uses_unsloth(settings.loader):
        extra = {"finetune_vision_layers": False} if settings.vision else {}
        return _unsloth_class(settings).get_peft_model(model, **lora, **extra), processor
    from peft import LoraConfig, get_peft_model

    if settings.use_quantization:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    return get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **lora)), processor


def _load_transformers(settings: LoadSettings) -> tuple[Any, Any]:
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoProcessor,
        AutoTokenizer,
    )

    kwargs: dict[str, Any] = {"dtype": "auto"}
    if settings.use_quantization:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
        )
    kwargs["device_map"] = {"": device()}
    model_cls = AutoModelForImageTextToText if settings.vision else AutoModelForCausalLM
    processor_cls = AutoProcessor if settings.vision else AutoTokenizer
    with from_cache(settings.model_name):
        model = model_cls.from_pretrained(settings.model_name, **kwargs)
        return model, processor_cls.from_pretrained(settings.model_name)


def load_t5(model_name: str) -> tuple[Any, Any]:
    """A T5 encoder-decoder and its tokenizer (VIP5's backbone), on the job's device."""
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    with from_cache(model_name):
        model = T5ForConditionalGeneration.from_pretrained(model_name, device_map={"": device()})
        return model, AutoTokenizer.from_pretrained(model_name)


def _unsloth_class(settings: LoadSettings) -> Any:
    from unsloth import FastLanguageModel, FastVisionModel

    return FastVisionModel if settings.vision else FastLanguageModel
