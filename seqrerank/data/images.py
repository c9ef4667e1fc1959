"""Item images from the metadata's image URLs (``imUrl`` in the Amazon 2014 dump).

Each image is downloaded once, in parallel, with a timeout, retries and a size cap, and kept only
if its bytes decode as an image; it is stored already converted (RGB PNG, long side at most
448 px) as ``<original item id>.png`` in the raw images folder, from which data preparation takes
it like a local image. An item whose download fails keeps no image; the failure is logged, and
data preparation stops when no item has an image at all (offline, most likely).
"""

from __future__ import annotations

import http.client
import io
import logging
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from PIL import Image

from seqrerank.console import progress
from seqrerank.data.sources import is_transient
from seqrerank.io import atomic_path

log = logging.getLogger("seqrerank.data")

MAX_IMAGE_SIDE = 448
MAX_IMAGE_BYTES = 20 * 2**20
DOWNLOAD_WORKERS = 16


class ImageDownloadError(Exception):
    """An image URL gave no usable image."""


def fetch_images(
    urls: dict[str, str],
    dest_dir: Path,
    *,
    timeout: float = 10,
    retries: int = 2,
    max_bytes: int = MAX_IMAGE_BYTES,
    workers: int = DOWNLOAD_WORKERS,
) -> tuple[dict[str, Path], dict[str, str]]:
    """Download the image of each item (original id -> URL) not yet in ``dest_dir``; return the
    items whose image is now there, with its path, and those whose download failed, with why."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    todo = {item: url for item, url in urls.items() if not image_path(dest_dir, item).exists()}
    failures: dict[str, str] = {}

    def fetch(item: str) -> None:
        try:
            fetch_image(todo[item], image_path(dest_dir, item), timeout, retries, max_bytes)
        except ImageDownloadError as e:
            failures[item] = str(e)

    if todo:
        log.info("downloading %d item images into %s", len(todo), dest_dir)
        with ThreadPoolExecutor(workers) as pool:
            for _ in progress(pool.map(fetch, todo), desc="images", total=len(todo)):
                pass
    for item, reason in sorted(failures.items())[:10]:
        log.warning("no image for item %s: %s", item, reason)
    if failures:
        log.warning("%d of %d image downloads failed", len(failures), len(todo))
    fetched = {item: image_path(dest_dir, item) for item in urls if item not in failures}
    return fetched, failures


def image_path(dest_dir: Path, item: str) -> Path:
    return dest_dir / f"{item}.png"


def fetch_image(url: str, dest: Path, timeout: float, retries: int, max_bytes: int) -> None:
    """Download ``url``, check that it decodes, and store it converted at ``dest``.

    Timeouts, resets and server errors are retried with backoff; a client error (404), a host
    name that does not resolve, an oversized body or bytes that are not an image fail at once."""
    for attempt in range(retries + 1):
        try:
            data = _read_capped(url, timeout, max_bytes)
            break
        except ValueError as e:  # not a URL urllib can fetch
            raise ImageDownloadError(f"{url}: {e}") from e
        except (OSError, http.client.HTTPException) as e:  # timeouts, resets, HTTP errors
            if not is_transient(e) or attempt == retries:
                raise ImageDownloadError(f"{url}: {e}") from e
        time.sleep(0.5 * 2**attempt)
    try:
        with Image.open(io.BytesIO(data)) as image:
            rgb = to_rgb(image)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageDownloadError(f"{url}: not a readable image ({e})") from e
    rgb.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))  # keeps the aspect ratio, never upscales
    with atomic_path(dest) as tmp:
        rgb.save(tmp, format="PNG")


def _read_capped(url: str, timeout: float, max_bytes: int) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        data = response.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ImageDownloadError(f"{url}: larger than the {max_bytes} byte cap")
    return data


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB copy; transparent areas become white rather than whatever colour they hide."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


class ItemImages:
    """The items' images, each opened when asked (RGB, long side at most 448 px): what a model
    that shows images is given, so that it never handles a file path."""

    def __init__(self, folder: str | Path, items: pd.DataFrame):
        """``items``: the item table (indexed by item id), whose ``image`` column names each
        item's file in ``folder`` ("" for an item without an image)."""
        self.files = {
            int(item): Path(folder) / Path(name).name
            for item, name in items["image"].items()
            if name
        }

    def __contains__(self, item: int) -> bool:
        return item in self.files

    def __call__(self, item: int) -> Image.Image:
        with Image.open(self.files[item]) as image:
            rgb = to_rgb(image)
        rgb.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))
        return rgb
