"""Verbalizer scoring with vLLM (``backend: vllm``, GPU environments with vLLM installed).

Each prompt generates one token with the candidates' labels as the only allowed tokens, and
asks for the log-probabilities of all of them after that restriction. A log-softmax over the
label logits keeps their order, so the ranking equals the transformers backend's on the same
weights. vLLM loads weights from a folder: the LoRA adapter is merged into the base model, which
is written to a temporary folder and leaves the GPU to vLLM, which with ``tensor_parallel_size``
above 1 spreads it over that many of the job's GPUs (in one process of the job: vLLM starts its own
workers).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image

from seqrerank.llm.prompts import Prompt

log = logging.getLogger(__name__)


class VLLMScorer:
    def __init__(
        self,
        peft_model: Any,
        processor: Any,
        labels: list[int],
        load_image: Callable[[int], Image.Image] | None = None,
        tensor_parallel_size: int = 1,
    ):
        """``load_image(item)`` gives an item's image for prompts that show images."""
        from vllm import LLM

        self.folder = tempfile.TemporaryDirectory(prefix="seqrerank-vllm-")
        merged = peft_model.merge_and_unload()
        merged.save_pretrained(self.folder.name)
        processor.save_pretrained(self.folder.name)
        merged.to("cpu")
        torch.cuda.empty_cache()
        log.info("merged model written to %s for vLLM", self.folder.name)
        self.labels = labels
        self.load_image = load_image
        self.engine = LLM(
            model=self.folder.name,
            max_logprobs=len(labels),
            logprobs_mode="processed_logprobs",
            tensor_parallel_size=tensor_parallel_size,
            **({"limit_mm_per_prompt": {"image": 256}} if load_image else {}),
        )

    def score(self, prompts: list[Prompt], pool_sizes: list[int]) -> list[torch.Tensor]:
        from vllm import SamplingParams

        requests, params = [], []
        for prompt, size in zip(prompts, pool_sizes, strict=True):
            request: dict[str, Any] = {"prompt_token_ids": prompt.ids}
            if prompt.images:
                # The ids hold each image's expanded placeholder tokens, as vLLM's own
                # processor writes them, so it matches them to the images in order.
                images = [self.load_image(item) for item in prompt.images]
                request["multi_modal_data"] = {"image": images}
            requests.append(request)
            params.append(
                SamplingParams(
                    max_tokens=1,
                    temperature=0.0,
                    allowed_token_ids=self.labels[:size],
                    logprobs=size,
                )
            )
        outputs = self.engine.generate(requests, params, use_tqdm=False)
        scores = []
        for output, size in zip(outputs, pool_sizes, strict=True):
            logprobs = output.outputs[0].logprobs[0]
            scores.append(
                torch.tensor(
                    [
                        logprobs[token].logprob if token in logprobs else float("-inf")
                        for token in self.labels[:size]
                    ]
                )
            )
        return scores
