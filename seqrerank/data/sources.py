"""Readers for the raw input formats, and a resumable downloader.

Every reader returns interactions as a DataFrame with columns ``user`` (str), ``item`` (str),
``rating`` (float) and ``timestamp`` (int); metadata readers return one row per item with
``item``, ``title``, ``text`` and ``image_url`` (all str, possibly empty). Malformed input
raises :class:`DataFormatError` naming the file and line, so a bad download is easy to fix.
"""

from __future__ import annotations

import ast
import csv
import gzip
import hashlib
import html
import http.client
import json
import logging
import math
import os
import re
import socket
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
from tqdm import tqdm

log = logging.getLogger("seqrerank.data")

INTERACTION_COLUMNS = ["user", "item", "rating", "timestamp"]
META_COLUMNS = ["item", "title", "text", "image_url"]
REVIEW_KEYS = ("reviewerID", "asin", "overall", "unixReviewTime")

_EXCERPT_CHARS = 80
_LEADING_ASIN = re.compile(r"""\{\s*['"]asin['"]\s*:\s*['"]([^'"]+)['"]""")
_CHUNK_BYTES = 1 << 20


class DataFormatError(ValueError):
    """A raw input file does not have the expected format."""


def _format_error(
    path: str | os.PathLike,
    lineno: int | None,
    expected: str,
    got: str,
    excerpt: str = "",
    fix: str = "Fix or delete this line.",
) -> DataFormatError:
    """Build the error for one bad line: where, what was expected, what was found, and the fix."""
    where = f"{path}:{lineno}" if lineno is not None else str(path)
    shown = excerpt if len(excerpt) <= _EXCERPT_CHARS else excerpt[:_EXCERPT_CHARS] + "..."
    return DataFormatError(f"{where}: expected {expected}, got {got}: {shown!r}. {fix}")


def open_text(path: str | os.PathLike) -> IO[str]:
    """Open a UTF-8 text file, transparently decompressing ``.gz``."""
    if str(path).endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _open_binary(path: str | os.PathLike) -> IO[bytes]:
    return gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb")


@contextmanager
def _decoding(path: str | os.PathLike) -> Iterator[None]:
    """Turn a file that is not UTF-8, or a ``.gz`` that is not (complete) gzip, into a
    DataFormatError naming the file, the line and the fix, in place of a decoder's traceback."""
    try:
        yield
    except UnicodeDecodeError as e:
        raise _not_utf8_error(path, e) from e
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:  # truncated, not gzip, corrupt
        raise _gzip_error(path, e) from e


def _not_utf8_error(path: str | os.PathLike, error: UnicodeDecodeError) -> DataFormatError:
    """The first line that does not decode: a decoder reads in chunks, so its error has none."""
    fix = "Convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8) or fix this line."
    with _open_binary(path) as f:
        for lineno, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as bad:
                text = raw.decode("utf-8", errors="replace").strip()
                byte = f"the byte {raw[bad.start]:#04x} ({bad.reason})"
                return _format_error(path, lineno, "UTF-8 text", byte, text, fix)
    return DataFormatError(f"{path}: expected UTF-8 text, got {error}. {fix}")


def _gzip_error(path: str | os.PathLike, error: Exception) -> DataFormatError:
    with open(path, "rb") as f:
        if f.read(2) != b"\x1f\x8b":
            return DataFormatError(
                f"{path}: expected gzip data (its name ends in .gz), got {error}. If it is plain "
                "text, remove .gz from its name (and from the config); else download it again."
            )
    lines = 0
    try:  # count the lines before the damage
        with gzip.open(path, "rb") as f:
            for _ in f:
                lines += 1
    except (EOFError, gzip.BadGzipFile, zlib.error):
        pass
    return DataFormatError(
        f"{path}:{lines + 1}: the gzip data is truncated or corrupt after line {lines} ({error}), "
        "e.g. by an interrupted download. Download the file again."
    )


def _numbered_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, stripped line) for every non-blank line."""
    with _decoding(path), open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if line:
                yield lineno, line


def _interactions(users: list, items: list, ratings: list, timestamps: list) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user": pd.Series(users, dtype=str),
            "item": pd.Series(items, dtype=str),
            "rating": pd.Series(ratings, dtype="float64"),
            "timestamp": pd.Series(timestamps, dtype="int64"),
        }
    )


# --- Amazon 2014: ratings CSV -------------------------------------------------------------


def read_ratings_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``ratings_<Category>.csv``: no header, lines ``user,item,rating,timestamp``.

    pandas parses the (often multi-million line) file; only when it fails is the file re-scanned
    line by line with the csv module, to report the first bad line precisely.
    """
    dtypes = {"user": str, "item": str, "rating": "float64", "timestamp": "int64"}
    with _decoding(path):
        try:
            df = pd.read_csv(
                path, header=None, names=INTERACTION_COLUMNS, dtype=dtypes, keep_default_na=False
            )
        except ValueError:  # includes pandas' ParserError and failed dtype conversions
            _raise_first_bad_ratings_line(path)
            raise
    bad = ~np.isfinite(df["rating"]) | (df["user"] == "") | (df["item"] == "")
    if bad.any():
        _raise_first_bad_ratings_line(path)
    return df


def _raise_first_bad_ratings_line(path: str | os.PathLike) -> None:
    expected = "4 comma-separated fields user,item,rating,timestamp"
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        for row in reader:
            if not row:
                continue
            line = ",".join(row)
            if len(row) != 4:
                raise _format_error(path, reader.line_num, expected, f"{len(row)}", line)
            problem = _ratings_row_problem(row)
            if problem:
                raise _format_error(path, reader.line_num, expected, problem, line)


def _ratings_row_problem(row: list[str]) -> str:
    """Describe what is wrong with a 4-field row, or return "" when it is fine."""
    user, item, rating, timestamp = row
    if not user or not item:
        return "an empty user or item id"
    try:
        if not math.isfinite(float(rating)):
            return f"a non-finite rating {rating!r}"
    except ValueError:
        return f"a non-numeric rating {rating!r}"
    try:
        int(timestamp)
    except ValueError:
        return f"a non-integer timestamp {timestamp!r}"
    return ""


# --- Amazon 2014: reviews JSON lines ------------------------------------------------------


def read_reviews_json(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``reviews_<Category>_5.json[.gz]``: one JSON object per line."""
    expected = f"a JSON object with keys {', '.join(REVIEW_KEYS)}"
    columns: tuple[list, list, list, list] = ([], [], [], [])
    for lineno, line in _numbered_lines(path):
        try:
            review = json.loads(line)
            values = (
                str(review["reviewerID"]),
                str(review["asin"]),
                float(review["overall"]),
                int(review["unixReviewTime"]),
            )
        except json.JSONDecodeError as e:
            raise _format_error(path, lineno, expected, f"invalid JSON ({e.msg})", line) from e
        except (KeyError, TypeError, ValueError) as e:
            raise _format_error(path, lineno, expected, f"a bad or missing {e}", line) from e
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    return _interactions(*columns)


# --- Amazon 2014: metadata (Python literals, not JSON) ------------------------------------


def read_amazon_meta(path: str | os.PathLike, items: Collection[str] | None = None) -> pd.DataFrame:
    """Read ``meta_<Category>.json[.gz]``, whose lines are Python dict literals.

    The 2014 dump was written with ``str(dict)``, so it uses single quotes and is not JSON;
    ``ast.literal_eval`` parses it safely (it evaluates literals only, never code). Parsing costs
    about 0.5 ms a line, so with ``items`` given, lines that start with the asin of another item
    are skipped unparsed (and so unchecked).
    """
    rows = []
    for lineno, line in _numbered_lines(path):
        leading_asin = _LEADING_ASIN.match(line)
        if items is not None and leading_asin and leading_asin.group(1) not in items:
            continue
        try:
            entry = ast.literal_eval(line)
        except (SyntaxError, ValueError, MemoryError, RecursionError) as e:
            raise _format_error(
                path, lineno, "a Python dict literal", f"unparsable text ({e})", line
            ) from e
        if not isinstance(entry, dict) or not entry.get("asin"):
            raise _format_error(
                path, lineno, "a dict with an 'asin' key", type(entry).__name__, line
            )
        rows.append(
            (
                str(entry["asin"]),
                _clean(entry.get("title")),
                item_text(entry),
                _clean(entry.get("imUrl")),
            )
        )
    return pd.DataFrame(rows, columns=META_COLUMNS, dtype=str)


def item_text(entry: dict[str, Any]) -> str:
    """Readable description: "Title. Brand: X. Categories: a, b. Description"."""
    parts = [_clean(entry.get("title"))]
    brand = _clean(entry.get("brand"))
    if brand:
        parts.append(f"Brand: {brand}")
    categories = _flatten_categories(entry.get("categories"))
    if categories:
        parts.append("Categories: " + ", ".join(categories))
    parts.append(_clean(entry.get("description")))
    return " ".join(p if p.endswith((".", "!", "?")) else p + "." for p in parts if p)


def _flatten_categories(categories: Any) -> list[str]:
    """Flatten the list of category paths, keeping the first occurrence of each name."""
    if not isinstance(categories, list):
        return []
    names = (_clean(c) for path in categories if isinstance(path, list) for c in path)
    return list(dict.fromkeys(n for n in names if n))


def _clean(value: Any) -> str:
    """Unescape HTML entities and collapse whitespace, so text fits on one CSV line."""
    if value is None:
        return ""
    return re.sub(r"\s+", " ", html.unescape(str(value))).strip()


# --- Sequence files (one user per line) ---------------------------------------------------


def read_sequences(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``user item item ...`` lines of integer ids (items in time order); timestamp =
    position in line."""
    users: list[str] = []
    items: list[str] = []
    positions: list[int] = []
    first_line: dict[str, int] = {}
    for lineno, line in _numbered_lines(path):
        user, *sequence = line.split()
        if not sequence:
            raise _format_error(
                path, lineno, "a user id followed by at least one item id", "only 1 field", line
            )
        # A stray non-integer would make every id sort as text (prepare.sorted_ids): renumbered.
        token = next((t for t in (user, *sequence) if not (t.isascii() and t.isdigit())), None)
        if token is not None:
            raise _format_error(
                path, lineno, "integer user and item ids", f"the token {token!r}", line
            )
        if user in first_line:
            raise _format_error(
                path,
                lineno,
                "one line per user",
                f"user {user!r} again (first on line {first_line[user]})",
                line,
            )
        first_line[user] = lineno
        users.extend([user] * len(sequence))
        items.extend(sequence)
        positions.extend(range(len(sequence)))
    return _interactions(users, items, [5.0] * len(items), positions)


def read_item_attributes(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``{item_id: [attribute ids]}`` JSON into columns ``item``, ``attributes``.

    ``attributes`` holds the ids space-joined, e.g. ``"1 2 3"``.
    """
    with _decoding(path), open_text(path) as f:
        text = f.read()
    try:
        mapping = json.loads(text)
    except json.JSONDecodeError as e:
        bad_line = text.splitlines()[e.lineno - 1] if text else ""
        raise _format_error(
            path, e.lineno, "a JSON object", f"invalid JSON ({e.msg})", bad_line
        ) from e
    if not isinstance(mapping, dict):
        raise _format_error(path, None, "a JSON object", type(mapping).__name__, text)
    rows = []
    for item, attributes in mapping.items():
        if not isinstance(attributes, list) or not all(
            isinstance(a, int) and not isinstance(a, bool) for a in attributes
        ):
            raise _format_error(
                path,
                None,
                f"a list of integer attribute ids for item {item!r}",
                type(attributes).__name__,
                json.dumps(attributes),
            )
        rows.append((str(item), " ".join(map(str, attributes))))
    return pd.DataFrame(rows, columns=["item", "attributes"], dtype=str)


# --- Download -----------------------------------------------------------------------------


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    timeout: float = 30,
    retries: int = 3,
    backoff: float = 1.0,
) -> Path:
    """Download ``url`` to ``dest``, resuming from ``dest.part`` and verifying ``sha256``.

    The data goes to ``<dest>.part`` (a fixed name, unlike seqrerank.io's temp files, so an
    interrupted download can be resumed) and is renamed onto ``dest`` only once complete and
    verified. An existing ``dest`` is only checked, so this works offline. Written here rather
    than with pooch or Snakemake's http storage plugin: neither resumes a partial download, and
    the Amazon metadata files are gigabytes on links that drop.
    """
    dest = Path(dest)
    if dest.exists():
        if sha256:
            _check_digest(dest, sha256, f"Delete {dest} to download it again.")
        return dest
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries + 1):
        try:
            _fetch_into(url, part, timeout)
            break
        except (OSError, http.client.HTTPException) as e:  # timeouts, resets, short bodies
            if not is_transient(e) or attempt == retries:
                raise
            log.warning("download of %s failed (%s), retrying", url, e)
        time.sleep(backoff * 2**attempt)
    if sha256:
        try:
            _check_digest(part, sha256, f"Check the url and the sha256 for {dest.name}.")
        except ValueError:
            part.unlink()
            raise
    os.replace(part, dest)
    return dest


def is_transient(error: OSError | http.client.HTTPException) -> bool:
    """Whether a failed request is worth retrying: a timeout, a reset, a short body or a server
    error, not a client error (4xx) or a host name that does not resolve, which a retry a few
    seconds later only repeats (offline, every request would wait through all its retries)."""
    if isinstance(error, urllib.error.HTTPError):
        return error.code >= 500
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    return not isinstance(reason, socket.gaierror)


def _fetch_into(url: str, part: Path, timeout: float) -> None:
    """Fetch the rest of ``url`` into ``part``; raise OSError if the body ends early."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url)
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and _range_total(e.headers.get("Content-Range", "")) == offset:
            return  # the part file was already complete
        if e.code == 416:
            part.unlink()  # the part file does not match the remote file; start over
            raise OSError(f"stale partial download {part} removed") from e
        raise
    with response:
        if offset and response.status != 206:
            offset = 0  # the server ignored the Range header and sends the whole file
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        with (
            open(part, "ab" if offset else "wb") as f,
            tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, desc=part.name, disable=None
            ) as bar,
        ):
            while chunk := response.read(_CHUNK_BYTES):
                f.write(chunk)
                bar.update(len(chunk))
    if total is not None and part.stat().st_size < total:
        raise OSError(f"connection closed after {part.stat().st_size} of {total} bytes")


def _range_total(content_range: str) -> int | None:
    """Total size from a ``Content-Range: bytes */1234`` header, if present."""
    match = re.search(r"/(\d+)\s*$", content_range)
    return int(match.group(1)) if match else None


def _check_digest(path: Path, expected: str, fix: str) -> None:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            digest.update(chunk)
    actual = digest.hexdigest()
    if actual != expected.lower():
        raise ValueError(f"sha256 mismatch for {path}: expected {expected}, got {actual}. {fix}")
