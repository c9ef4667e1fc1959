"""The download_models rule's work: fetch the hub models a config names into the model cache
(see :mod:`seqrerank.hub`). Runs on the login node, in the data environment."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

from seqrerank.hub import OPEN_CLIP
from seqrerank.io import write_text

log = logging.getLogger(__name__)


def fetch_models(models: Iterable[str], cache: str, out_path: str | Path) -> dict[str, str]:
    """Download every model of ``models`` (hub ids, or ``open_clip:<model>:<tag>``) into the
    Hugging Face cache ``cache``; write what was fetched, with each snapshot's folder, to
    ``out_path``."""
    from huggingface_hub import snapshot_download

    fetched = {}
    for model in models:
        repo = _open_clip_repo(model) if model.startswith(OPEN_CLIP) else model
        log.info("fetching %s into %s", repo, cache)
        fetched[model] = snapshot_download(repo, cache_dir=str(Path(cache) / "hub"))
    write_text(out_path, json.dumps(fetched, indent=2) + "\n")
    return fetched


def _open_clip_repo(model: str) -> str:
    """The hub repository of an open_clip model's pretrained weights."""
    import open_clip

    name, _, tag = model.removeprefix(OPEN_CLIP).partition(":")
    config = open_clip.get_pretrained_cfg(name, tag)
    if not config.get("hf_hub"):
        raise ValueError(f"open_clip has no hub weights for {name} {tag!r}")
    return config["hf_hub"].rstrip("/")
