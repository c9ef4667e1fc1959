"""Captions and semantic summaries: per-item caches that resume, batches that fall back to one
item at a time, prefetched images, and the tiny BLIP-2 and Qwen3-VL models end to end."""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from conftest import tiny_model

from seqrerank.data.dataset import load_items
from seqrerank.data.images import ItemImages
from seqrerank.data.item_text import (
    CaptionSettings,
    Item,
    SummarySettings,
    fingerprint,
    prefetched_images,
    write_item_texts,
)

CAPTIONS = CaptionSettings(model_name=tiny_model("blip2"), batch_size=4, max_tokens=6)
SUMMARIES = SummarySettings(
    model_name=tiny_model("qwen3vl"), batch_size=3, max_tokens=6, image_workers=2
)


pytestmark = pytest.mark.usefixtures("tiny_models")


@pytest.fixture
def few_items(demo_dir: Path, tmp_path: Path) -> Path:
    """A data folder with the demo's first 10 items (and their images)."""
    out = tmp_path / "data"
    out.mkdir()
    items = pd.read_csv(demo_dir / "items.csv").head(10)
    items.to_csv(out / "items.csv", index=False)
    for image in items["image"]:
        (out / image).parent.mkdir(exist_ok=True)
        shutil.copy(demo_dir / image, out / image)
    return out


class Recorder:
    """A stand-in model: writes "text of <id>" and records which items it was asked for."""

    def __init__(self, fail_batches: bool = False):
        self.calls: list[list[int]] = []
        self.fail_batches = fail_batches

    def __call__(self, items: list[Item], images: list) -> list[str]:
        self.calls.append([item.item_id for item in items])
        assert all(image.size == (64, 64) for image in images)
        if self.fail_batches and len(items) > 1:
            raise RuntimeError("out of memory")
        return [f"text of {item.item_id}" for item in items]

    @property
    def items(self) -> list[int]:
        return [item for call in self.calls for item in call]


def test_item_texts_are_written_for_every_item(few_items: Path, tmp_path: Path) -> None:
    out = few_items / "captions.csv"
    recorder = Recorder()
    write_item_texts(few_items, "caption", out, tmp_path / "cache", CAPTIONS, recorder)
    table = pd.read_csv(out)
    assert list(table.columns) == ["item_id", "caption"]
    assert table["caption"].tolist() == [f"text of {i}" for i in range(1, 11)]
    assert [len(call) for call in recorder.calls] == [4, 4, 2]  # batch_size 4
    assert load_items(few_items).loc[3, "caption"] == "text of 3"  # joined into the item table


def test_a_rerun_generates_only_the_missing_items(few_items: Path, tmp_path: Path) -> None:
    out, cache = few_items / "captions.csv", tmp_path / "cache"
    write_item_texts(few_items, "caption", out, cache, CAPTIONS, Recorder())
    # An interrupted run: its output never written, three items never generated.
    out.unlink()
    for item in (2, 5, 9):
        (cache / fingerprint(CAPTIONS) / f"{item}.txt").unlink()
    rerun = Recorder()
    write_item_texts(few_items, "caption", out, cache, CAPTIONS, rerun)
    assert rerun.items == [2, 5, 9]
    assert pd.read_csv(out)["caption"].tolist() == [f"text of {i}" for i in range(1, 11)]
    again = Recorder()
    write_item_texts(few_items, "caption", out, cache, CAPTIONS, again)
    assert again.calls == []


def test_changed_generation_settings_do_not_reuse_the_cache(
    few_items: Path, tmp_path: Path
) -> None:
    out, cache = few_items / "captions.csv", tmp_path / "cache"
    write_item_texts(few_items, "caption", out, cache, CAPTIONS, Recorder())
    longer = Recorder()
    write_item_texts(few_items, "caption", out, cache, replace(CAPTIONS, max_tokens=7), longer)
    assert longer.items == list(range(1, 11))
    # batch size changes how, not what, is generated: the cache stays valid.
    other_batches = Recorder()
    write_item_texts(
        few_items, "caption", out, cache, replace(CAPTIONS, batch_size=2), other_batches
    )
    assert other_batches.calls == []


def test_a_failing_batch_falls_back_to_one_item_at_a_time_and_says_so(
    few_items: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder(fail_batches=True)
    out = few_items / "s.csv"
    with caplog.at_level(logging.WARNING):
        write_item_texts(few_items, "semantic_summary", out, tmp_path / "c", SUMMARIES, recorder)
    assert pd.read_csv(out)["semantic_summary"].tolist() == [f"text of {i}" for i in range(1, 11)]
    assert "batch of items [1, 2, 3] failed (RuntimeError: out of memory)" in caplog.text
    assert "one by one" in caplog.text


@pytest.mark.parametrize("preload_all", [False, True])
def test_prefetched_images_come_batch_by_batch_in_order(few_items: Path, preload_all) -> None:
    items = [Item(i, "") for i in range(1, 11)]
    batches = [items[:4], items[4:8], items[8:]]
    images = ItemImages(few_items / "images", load_items(few_items))
    loaded = list(prefetched_images(batches, images, workers=3, preload_all=preload_all))
    assert [len(images) for images in loaded] == [4, 4, 2]
    assert all(image.mode == "RGB" for images in loaded for image in images)


@pytest.mark.parametrize(
    ("column", "settings"), [("caption", CAPTIONS), ("semantic_summary", SUMMARIES)]
)
def test_the_tiny_models_write_a_text_per_item(
    few_items: Path, tmp_path: Path, column: str, settings
) -> None:
    """The real model code (BLIP-2 via transformers, Qwen3-VL batched generation with left
    padding) on tiny random-weight models: random words, but one text per item."""
    out = few_items / f"{column}.csv"
    write_item_texts(few_items, column, out, tmp_path / "cache", settings)
    table = pd.read_csv(out, keep_default_na=False)
    assert table["item_id"].tolist() == list(range(1, 11))
    assert table[column].map(len).gt(0).all()
