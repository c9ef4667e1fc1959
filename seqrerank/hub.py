"""Pretrained models on compute nodes without internet: the workflow's ``download_models`` rule
fetches every hub model the config names into the model cache on the login node, and every job
that loads one runs offline from that cache.

The cache is a Hugging Face cache folder (``HF_HOME``): transformers, sentence-transformers and
open_clip (whose pretrained weights live on the hub) all read it. Every job that loads a
model imports this module, so it imports nothing heavy; fetching is
:mod:`seqrerank.model_download`'s.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HUB_MODELS = "results/models/hub.json"
"""What the download_models rule writes: the models it fetched, with their snapshot folders."""
OPEN_CLIP = "open_clip:"
"""Prefix of an open_clip model with pretrained weights: ``open_clip:<model>:<tag>``."""


class ModelNotCachedError(OSError):
    """A job that runs offline asked for a model that is not in the model cache."""


def default_cache() -> str:
    """``$HF_HOME``, else Hugging Face's own default, ``~/.cache/huggingface``."""
    return os.environ.get("HF_HOME", str(Path("~/.cache/huggingface").expanduser()))


def is_hub_id(name: str | None) -> bool:
    """Whether a configured model name is fetched from the hub: not a local path (absolute,
    relative, in the user's home, or written by the workflow under ``results/``)."""
    if not name:
        return False
    return not name.startswith(("/", "./", "../", "~", "results/", "local-dir:"))


def clip_model_id(clip_model: str, pretrained: str | None) -> str | None:
    """The hub model of an open_clip model's weights, as the download_models rule names it:
    ``open_clip:<model>:<tag>``, the repository of an ``hf-hub:`` model, or None for random or
    local weights."""
    if clip_model.startswith("hf-hub:"):
        return clip_model.removeprefix("hf-hub:")
    if pretrained is None or clip_model.startswith("local-dir:") or Path(pretrained).exists():
        return None
    return f"{OPEN_CLIP}{clip_model}:{pretrained}"


def use_cache(cache: str, offline: bool = True) -> None:
    """Make every model loaded in this process come from ``cache``, without the network (set
    before transformers is imported: it reads these once)."""
    os.environ["HF_HOME"] = cache
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"


@contextmanager
def from_cache(model: str) -> Iterator[None]:
    """Around the loading of ``model``: in a job that runs offline, a model missing from the
    cache is an error that names it, the cache, and the rule that fetches it."""
    try:
        yield
    except OSError as error:
        if not is_hub_id(model) or os.environ.get("HF_HUB_OFFLINE", "0") in ("", "0"):
            raise
        raise ModelNotCachedError(
            f"{model} is not in the model cache {os.environ.get('HF_HOME', default_cache())}, "
            "and this job runs offline. The download_models rule fetches every model the "
            "config names into the cache, on the login node (`snakemake ... "
            f"{HUB_MODELS}`); check `model_cache` in the config. "
            f"({type(error).__name__}: {error})"
        ) from error
