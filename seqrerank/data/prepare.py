"""Prepare a dataset: read a raw source, filter it as LlamaRec does, reindex, split leave-one-out.

Outputs in ``out_dir`` (each written atomically):

* ``train.txt``: ``user item item ...`` per user (all but the last two items),
* ``val.txt`` / ``test.txt``: ``user item`` (the second-to-last / last item),
* ``items.csv``: ``item_id,original_id,title,text,image[,attributes]``, sorted by item_id,
* ``images/<item_id>.png``: RGB, long side at most 448 px, from ``images_dir`` or (with
  ``use_image``) downloaded from the metadata's image URLs,
* ``stats.json``: final counts, the counts after each filter step, and how many items lack an
  image or text.

Users and items are numbered from 1 (0 stays free for padding).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from seqrerank.data.dataset import IMAGES_FOLDER, DatasetFiles
from seqrerank.data.images import MAX_IMAGE_SIDE, ImageDownloadError, fetch_images, to_rgb
from seqrerank.data.sources import (
    read_amazon_meta,
    read_item_attributes,
    read_ratings_csv,
    read_reviews_json,
    read_sequences,
)
from seqrerank.data.synthetic import generate_demo
from seqrerank.io import atomic_path, write_json, write_text

log = logging.getLogger("seqrerank.data")

MIN_LENGTH = 3  # leave-one-out needs a training item besides the validation and test items
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"}


@dataclass(frozen=True)
class Source:
    interactions: pd.DataFrame  # user, item, rating, timestamp
    meta: pd.DataFrame | None  # item, title, text, image_url[, attributes]
    images_dir: Path | None


@dataclass(frozen=True)
class RawFiles:
    """The raw files a dataset is prepared from, by role (the workflow names each one)."""

    ratings: Path | None = None
    """Amazon ``ratings_<Category>.csv``."""
    reviews: Path | None = None
    """Amazon ``reviews_<Category>_5.json[.gz]`` (when there is no ratings file)."""
    meta: Path | None = None
    """Amazon ``meta_<Category>.json[.gz]``."""
    sequences: Path | None = None
    """A ``user item item ...`` sequence file."""
    attributes: Path | None = None
    """Item -> attribute ids JSON, beside a sequence file."""
    images: Path | None = None
    """A folder of ``<original item id>.<ext>`` images."""


def raw_inputs(named: Mapping[str, Any]) -> RawFiles:
    """The raw files among a workflow rule's named inputs (named by role)."""
    roles = {f.name for f in fields(RawFiles)}
    return RawFiles(**{role: Path(path) for role, path in named.items() if role in roles})


def prepare_dataset(
    spec: dict[str, Any], raw_dir: str | os.PathLike, out_dir: str | os.PathLike, seed: int = 42
) -> dict[str, Any]:
    """Prepare the dataset ``spec`` describes from a folder of raw files into ``out_dir``, all in
    one call, for the tests and benchmarks: the demo data is generated into ``raw_dir``, the raw
    files are found there by their Amazon names (or taken from the paths in ``spec``), and with
    ``use_image`` the images are downloaded (the workflow does each of these in its own rule)."""
    raw_dir = Path(raw_dir)
    raw = find_raw_files(spec, raw_dir, seed)
    if spec.get("use_image") and raw.images is None:
        raw = replace(raw, images=fetch_item_images(spec, raw, raw_dir / IMAGES_FOLDER))
    return prepare(spec, raw, DatasetFiles.in_folder(out_dir, images=True))


def prepare(spec: dict[str, Any], raw: RawFiles, out: DatasetFiles) -> dict[str, Any]:
    """Read the raw files, write the prepared dataset to ``out`` (its images into the folder
    ``out.images``), return its stats. The preparation is deterministic. ``missing_images``
    counts the kept items without a usable image (0 when the source has no images at all),
    ``missing_text`` those without text."""
    source = load_source(spec, raw)
    filters = dataset_filters(spec)
    interactions, steps = filter_interactions(source.interactions, source.meta, **filters)
    found = find_images(source, interactions["item"].unique(), spec)
    # With require_image, items whose image turns out unreadable are dropped and the filters
    # rerun (k-core may drop more), until every kept item has an image.
    usable = set(found) if spec.get("require_image") else None
    while True:
        if usable is not None:
            interactions, steps = filter_interactions(
                source.interactions, source.meta, **filters, image_items=usable
            )
        interactions, original_items = reindex(interactions)
        images = prepare_images(original_items, found, Path(out.images))
        unreadable = {item for item, image in zip(original_items, images, strict=True) if not image}
        if usable is None or not unreadable:
            break
        usable -= unreadable
    sequences = user_sequences(interactions)
    items = item_table(original_items, source.meta, images)
    missing_images = images.count("") if found else 0
    missing_text = int((items["text"] == "").sum())
    if missing_images:
        log.warning("%d of %d items have no usable image", missing_images, len(items))

    Path(out.images).mkdir(parents=True, exist_ok=True)  # a declared output, also when empty
    write_splits(out, sequences)
    with atomic_path(out.items) as tmp:
        items.to_csv(tmp, index=False)
    stats = {
        "users": len(sequences),
        "items": len(original_items),
        "interactions": len(interactions),
        "avg_length": round(len(interactions) / len(sequences), 4),
        "missing_images": missing_images,
        "missing_text": missing_text,
        "repeats": "drop" if filters["drop_repeats"] else "keep",
        "filters": steps,
        "source": spec["source"],
    }
    write_json(out.stats, stats)
    log.info(
        "prepared %s: %d users, %d items, %d interactions",
        out.items.parent,
        stats["users"],
        stats["items"],
        stats["interactions"],
    )
    return stats


def dataset_filters(spec: dict[str, Any]) -> dict[str, Any]:
    """The filter settings of a dataset, with their defaults."""
    return {
        "min_rating": float(spec.get("min_rating", 0.0)),
        "min_uc": int(spec.get("min_uc", 5)),
        "min_sc": int(spec.get("min_sc", 5)),
        "require_title": bool(spec.get("require_title", False)),
        "drop_repeats": spec.get("repeats", "drop") == "drop",
    }


# --- Sources ------------------------------------------------------------------------------


def find_raw_files(spec: dict[str, Any], raw_dir: Path, seed: int = 42) -> RawFiles:
    """The raw files of ``spec`` (paths in it are taken from the working directory), or for the
    Amazon files it does not name, those in ``raw_dir`` with Amazon's names; the demo data is
    generated into ``raw_dir`` first."""
    images = _existing(spec["images_dir"], "images_dir") if spec.get("images_dir") else None
    kind = spec["source"]
    if kind == "sequences":
        attributes = _existing(spec["attributes"], "attributes") if spec.get("attributes") else None
        return RawFiles(sequences=_existing(spec["path"], "path"), attributes=attributes)
    if kind == "synthetic":
        log.info("generating the demo data in %s", raw_dir)
        demo = generate_demo(raw_dir, **{"seed": seed, **(spec.get("synthetic") or {})})
        return RawFiles(ratings=demo.ratings, meta=demo.meta, images=demo.images)
    if kind != "amazon":
        raise ValueError(f"unknown dataset source {kind!r}; expected amazon, sequences, synthetic")
    category = spec["category"]
    named = {key: _existing(spec[key], key) for key in ("ratings", "reviews") if key in spec}
    if spec.get("meta"):
        named["meta"] = _existing(spec["meta"], "meta")
    if not {"ratings", "reviews"} & set(named):
        names = [f"ratings_{category}.csv", *(f"reviews_{category}_5.json{z}" for z in (".gz", ""))]
        interactions = _first_existing(
            raw_dir, names, "`ratings` (a ratings CSV) or `reviews` (a reviews JSON file)"
        )
        named["ratings" if interactions.suffix == ".csv" else "reviews"] = interactions
    if "meta" not in named:
        names = [f"meta_{category}.json.gz", f"meta_{category}.json"]
        named["meta"] = _first_existing(raw_dir, names, "`meta`")
    return RawFiles(**named, images=images)


def load_source(spec: dict[str, Any], raw: RawFiles) -> Source:
    if raw.sequences is not None:
        interactions = read_sequences(raw.sequences)
        meta = None
        if raw.attributes is not None:
            meta = read_item_attributes(raw.attributes)
            meta = meta.assign(title="", text="", image_url="")
        return Source(interactions, meta, raw.images)
    if raw.ratings is not None:
        interactions = read_ratings_csv(raw.ratings)
    elif raw.reviews is not None:
        interactions = read_reviews_json(raw.reviews)
    else:
        raise ValueError(
            f"dataset source {spec['source']!r} needs a ratings, reviews or sequence file"
        )
    log.info("read %d interactions", len(interactions))
    if raw.meta is None:
        raise ValueError("an Amazon dataset needs its metadata file (`meta`)")
    meta = read_amazon_meta(raw.meta, items=set(interactions["item"].unique()))
    log.info("read metadata of %d items from %s", len(meta), raw.meta)
    return Source(interactions, meta, raw.images)


def _existing(path: str | os.PathLike, key: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; fix the dataset setting `{key}`")
    return path


def _first_existing(raw_dir: Path, names: list[str], keys: str) -> Path:
    for name in names:
        if (raw_dir / name).exists():
            return raw_dir / name
    tried = ", ".join(str(raw_dir / name) for name in names)
    raise FileNotFoundError(f"none of {tried} exists; download it or set {keys} in the dataset")


# --- Filters ------------------------------------------------------------------------------


def filter_interactions(
    interactions: pd.DataFrame,
    meta: pd.DataFrame | None,
    *,
    min_rating: float = 0.0,
    min_uc: int = 5,
    min_sc: int = 5,
    require_title: bool = False,
    drop_repeats: bool = True,
    image_items: Collection[str] | None = None,
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Apply the filters in LlamaRec's order; return the rest and the counts after each step.

    ``drop_repeats`` keeps only each user's first interaction with an item (after min_rating).
    ``image_items`` (require_image) keeps only the items in it, before the k-core.

    Every step is recorded, even when its setting makes it a no-op, so stats compare easily.
    The filters narrow a row mask over integer codes: grouping millions of strings is slow.
    """
    users = pd.factorize(interactions["user"])[0]
    items = pd.factorize(interactions["item"])[0]
    keep = np.ones(len(interactions), dtype=bool)
    steps: list[dict[str, Any]] = []

    def record(step: str, what: str, fix: str) -> None:
        counts = {
            "step": step,
            "users": int(np.count_nonzero(np.bincount(users[keep]))),
            "items": int(np.count_nonzero(np.bincount(items[keep]))),
            "interactions": int(keep.sum()),
        }
        steps.append(counts)
        log.info("after %s: %d users, %d items, %d interactions", *counts.values())
        if not counts["interactions"]:
            raise ValueError(f"dataset is empty after {what}: 0 users left; {fix}")

    record("raw", "reading the source", "check the input files")
    keep &= interactions["rating"].to_numpy() >= min_rating
    record("min_rating", f"the min_rating filter (min_rating={min_rating})", "lower min_rating")
    if drop_repeats:
        keep &= _first_interactions(users, items, interactions["timestamp"].to_numpy(), keep)
    record("repeats", "dropping repeated interactions", "set repeats: keep")
    if require_title:
        keep &= interactions["item"].isin(_titled_items(meta)).to_numpy()
    record(
        "require_title",
        f"the require_title filter (require_title={require_title})",
        "set require_title to false or check the item titles",
    )
    if image_items is not None:
        keep &= interactions["item"].isin(image_items).to_numpy()
        record(
            "require_image",
            "the require_image filter",
            "set require_image to false, or check images_dir and the image URLs (use_image)",
        )
    keep = k_core(users, items, keep, min_uc, min_sc)
    record("k_core", f"the k-core filter (min_uc={min_uc}, min_sc={min_sc})", "lower min_uc/min_sc")
    keep &= _kept_per_row(users, keep) >= MIN_LENGTH
    record(
        "min_length_3",
        "dropping users with fewer than 3 interactions",
        "leave-one-out needs 3 per user; add data or lower min_uc",
    )
    return interactions[keep], steps


def _first_interactions(
    users: np.ndarray, items: np.ndarray, timestamps: np.ndarray, keep: np.ndarray
) -> np.ndarray:
    """Rows that are their user's earliest kept interaction with the item (ties: first row)."""
    first = np.zeros(len(keep), dtype=bool)
    rows = np.flatnonzero(keep)
    rows = rows[np.argsort(timestamps[rows], kind="stable")]
    pairs = users[rows].astype(np.int64) * (int(items.max(initial=0)) + 1) + items[rows]
    first[rows[np.unique(pairs, return_index=True)[1]]] = True
    return first


def k_core(
    users: np.ndarray, items: np.ndarray, keep: np.ndarray, min_uc: int, min_sc: int
) -> np.ndarray:
    """Narrow the row mask ``keep`` until its users have >= min_uc rows and items >= min_sc.

    Removing rows can push other users or items below the threshold, hence the loop; the result
    is the unique largest subset where both hold, whatever the removal order.
    """
    while True:
        stable = keep & (_kept_per_row(users, keep) >= min_uc)
        stable &= _kept_per_row(items, keep) >= min_sc
        if np.array_equal(stable, keep):
            return keep
        keep = stable


def _kept_per_row(codes: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """For each row, how many kept rows share its code (its user's or its item's)."""
    return np.bincount(codes[keep], minlength=np.max(codes, initial=-1) + 1)[codes]


def _titled_items(meta: pd.DataFrame | None) -> pd.Series:
    if meta is None:
        raise ValueError(
            "require_title needs item titles, but this source has no metadata; "
            "set require_title to false"
        )
    return meta.loc[meta["title"] != "", "item"]


# --- Reindexing and splits ----------------------------------------------------------------


def reindex(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Number users and items from 1 in sorted original-id order; sort rows per user by time.

    Adds ``user_id`` and ``item_id`` and sorts by (user_id, timestamp, item_id). Returns the
    frame and the original item ids (item ``i`` is at index ``i - 1``).
    """
    users = sorted_ids(df["user"])
    items = sorted_ids(df["item"])
    df = df.assign(
        user_id=pd.Categorical(df["user"], categories=users).codes.astype(np.int64) + 1,
        item_id=pd.Categorical(df["item"], categories=items).codes.astype(np.int64) + 1,
    )
    return df.sort_values(["user_id", "timestamp", "item_id"], kind="stable"), items


def sorted_ids(ids: pd.Series) -> list[str]:
    """Unique ids in a deterministic order: numerically when all are integers, else as text.

    Numeric order keeps already-numbered data (e.g. Beauty.txt) in its original numbering.
    """
    unique = ids.unique().tolist()
    if all(i.isascii() and i.isdigit() for i in unique):
        return sorted(unique, key=lambda i: (int(i), i))
    return sorted(unique)


def user_sequences(df: pd.DataFrame) -> list[np.ndarray]:
    """Item ids of user 1, 2, ... in order, from a frame sorted by :func:`reindex`."""
    users = df["user_id"].to_numpy()
    starts = np.flatnonzero(users[1:] != users[:-1]) + 1
    return np.split(df["item_id"].to_numpy(), starts)


def write_splits(out: DatasetFiles, sequences: list[np.ndarray]) -> None:
    """Leave-one-out: the last item is the test target, the one before it the validation one."""
    train = [f"{u} {' '.join(map(str, seq[:-2]))}\n" for u, seq in enumerate(sequences, 1)]
    write_text(out.train, "".join(train))
    write_text(out.val, "".join(f"{u} {s[-2]}\n" for u, s in enumerate(sequences, 1)))
    write_text(out.test, "".join(f"{u} {s[-1]}\n" for u, s in enumerate(sequences, 1)))


# --- Items and images ---------------------------------------------------------------------


def item_table(
    original_items: list[str], meta: pd.DataFrame | None, images: list[str]
) -> pd.DataFrame:
    """One row per kept item: item_id, original_id, title, text, image[, attributes]."""
    items = pd.DataFrame(
        {"item_id": np.arange(1, len(original_items) + 1), "original_id": original_items}
    )
    if meta is None:
        return items.assign(title="", text="", image=images)
    extra = ["attributes"] if "attributes" in meta else []
    first_entries = meta.drop_duplicates("item").set_index("item")[["title", "text", *extra]]
    details = first_entries.reindex(original_items).fillna("").reset_index(drop=True)
    items = pd.concat([items, details], axis=1).assign(image=images)
    return items[["item_id", "original_id", "title", "text", "image", *extra]]


def find_images(
    source: Source, candidates: Collection[str], spec: dict[str, Any]
) -> dict[str, Path]:
    """The image file of each candidate item (original id) that has one in the source's
    images folder; with ``use_image``, an error when no item has one."""
    found = _index_images(source.images_dir) if source.images_dir else {}
    found = {item: found[item] for item in candidates if item in found}
    if spec.get("use_image") and not found:
        raise ValueError(
            "use_image is set but no item has an image: give the dataset an `images_dir` "
            "of <item id>.<ext> files, or metadata with image URLs (imUrl)"
        )
    absent = len(candidates) - len(found)
    if found and absent:
        log.warning("%d of %d items have no image file", absent, len(candidates))
    return found


def fetch_item_images(spec: dict[str, Any], raw: RawFiles, dest: Path) -> Path:
    """Download into ``dest`` the image of every item that the dataset's filters keep, from
    the image URLs of its metadata (the workflow's download_images rule; the rest of the
    preparation never touches the network). Returns ``dest``."""
    source = load_source(spec, raw)
    interactions, _ = filter_interactions(source.interactions, source.meta, **dataset_filters(spec))
    urls = {}
    if source.meta is not None:
        urls = source.meta.drop_duplicates("item").set_index("item")["image_url"].to_dict()
    wanted = {item: urls[item] for item in interactions["item"].unique() if urls.get(item)}
    if not wanted:
        raise ValueError(
            "use_image is set but no item has an image: give the dataset an `images_dir` "
            "of <item id>.<ext> files, or metadata with image URLs (imUrl)"
        )
    fetched, failed = fetch_images(wanted, dest)
    if not fetched:  # offline, most likely: say so here, not as a missing feature later
        example = min(failed.values())
        raise ImageDownloadError(
            f"use_image is set but all {len(failed)} image downloads into {dest} failed "
            f"(e.g. {example}), so no item has an image. Run the download where the image "
            "URLs are reachable, or give the dataset an `images_dir` of <item id>.<ext> "
            "files, or set use_image: false"
        )
    return dest


def prepare_images(original_items: list[str], found: dict[str, Path], folder: Path) -> list[str]:
    """Convert each item's image to ``<item_id>.png`` in ``folder``; return the item table's
    paths, ``images/<item_id>.png`` ("" for items without a readable image)."""
    paths = []
    for item_id, original in enumerate(original_items, 1):
        src = found.get(original)
        converted = src and convert_image(src, folder / f"{item_id}.png")
        paths.append(f"{IMAGES_FOLDER}/{item_id}.png" if converted else "")
    return paths


def _index_images(images_dir: Path) -> dict[str, Path]:
    """Map original item id (file stem) to its image; the first name in sorted order wins."""
    index: dict[str, Path] = {}
    for path in sorted(images_dir.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            index.setdefault(path.stem, path)
    return index


def convert_image(src: Path, dst: Path) -> bool:
    """Write ``src`` as an RGB PNG with long side <= 448 px; False (and a warning) if unreadable.

    The source path is stored in the PNG, so an up-to-date output is skipped only when it was
    made from this very file: item ids change when the filters change.
    """
    source = str(src.resolve())
    if _is_current(dst, src, source):
        return True
    try:
        with Image.open(src) as image:
            rgb = to_rgb(image)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        log.warning("unreadable image %s (%s); the item gets no image", src, e)
        return False
    rgb.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))  # keeps the aspect ratio, never upscales
    info = PngInfo()
    info.add_text("source", source)
    with atomic_path(dst) as tmp:
        rgb.save(tmp, format="PNG", pnginfo=info)
    return True


def _is_current(dst: Path, src: Path, source: str) -> bool:
    try:
        if dst.stat().st_mtime < src.stat().st_mtime:
            return False
        with Image.open(dst) as image:
            return image.info.get("source") == source
    except OSError:
        return False
