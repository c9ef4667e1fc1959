"""Which pretrained models a method of the grid builds on, and whether their weights are random.

A row of the comparison table is only as good as the models under it: the demo's LLM and VIP5
rerankers load tiny checkpoints with random weights (``results/models/tiny-<kind>``, written by
the ``tiny_model`` rule from :mod:`seqrerank.llm.tiny`), so their rows show that the path runs,
not what the method achieves. This module names those models from the config alone (no torch:
the workflow reads it when it parses the rules), for the ``aggregate`` rule to pass on as a
parameter.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Mapping
from typing import Any

from seqrerank.config import model_params
from seqrerank.registry import _init_arguments, method_spec, model_parameters

RANDOM_WEIGHTS_MARK = "‡"
"""Beside the method whose base model (or captioner/summariser) has random weights."""

# Where each generated item text's model is set in the config (see rules/item_text.smk).
TEXT_MODEL_SETTINGS = {
    "caption": ("captions", "model_name"),
    "semantic_summary": ("semantic_summaries", "model_name"),
    "semantic_summary_small": ("semantic_summaries", "small_model_name"),
}


def base_models(
    config: Mapping[str, Any], random_weight_prefix: str | None = None
) -> dict[str, dict[str, Any]]:
    """For every retriever and reranker of ``config``: ``base_model``, the pretrained model it
    loads (``model_name``: a hub id or a path; "" for a method trained from scratch),
    ``text_model``, the captioner or summariser that wrote the item texts it shows ("" if
    none), and ``random_weights``, whether either is a random-weight checkpoint: a path under
    ``random_weight_prefix`` (the workflow's tiny models, ``results/models/tiny-``)."""

    def random(name: str) -> bool:
        return bool(name and random_weight_prefix) and os.path.normpath(name).startswith(
            os.path.normpath(random_weight_prefix)
        )

    out = {}
    for method in [*config.get("retrievers", []), *config.get("rerankers", [])]:
        base = base_model_name(config, method)
        texts = [
            str(config[section][key])
            for column, (section, key) in TEXT_MODEL_SETTINGS.items()
            if column in method_spec(method).item_texts and section in config
        ]
        out[method] = {
            "base_model": base,
            "text_model": "; ".join(texts),
            "random_weights": random(base) or any(random(text) for text in texts),
        }
    return out


def base_model_name(config: Mapping[str, Any], method: str) -> str:
    """``methods.<method>.model.model_name``, else the class's default; "" for a method that
    loads no pretrained model."""
    if "model_name" not in model_parameters(method):
        return ""
    given = model_params(dict(config), method).get("model_name")
    return str(given) if given is not None else str(_default(method, "model_name"))


def _default(method: str, parameter: str) -> Any:
    """A parameter's default in the method's ``__init__``, read from its source (no import)."""
    module, class_name = method_spec(method).target.split(":")
    init = _init_arguments(module, class_name)
    positional = [*init.posonlyargs, *init.args]
    with_default = positional[len(positional) - len(init.defaults) :]
    defaults = {arg.arg: node for arg, node in zip(with_default, init.defaults, strict=True)}
    for arg, node in zip(init.kwonlyargs, init.kw_defaults, strict=True):
        if node is not None:
            defaults[arg.arg] = node
    return ast.literal_eval(defaults[parameter])
