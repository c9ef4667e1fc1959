"""Outputs are written whole, and readable by whoever the user's umask lets read them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from seqrerank.io import atomic_path, write_json


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_outputs_get_the_mode_of_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    previous = os.umask(umask)
    try:
        write_json(tmp_path / "comparison.json", {"ndcg@10": 0.5})
        with atomic_path(tmp_path / "model.pt") as tmp:
            torch.save({"weights": torch.zeros(2)}, tmp)
    finally:
        os.umask(previous)
    for name in ("comparison.json", "model.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_a_failed_write_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "out.csv") as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
