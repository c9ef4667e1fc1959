"""Tests of the data layer: readers, filters, splits, images, demo generator and downloader."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
from conftest import UNRESOLVABLE_URL, serving
from PIL import Image

from seqrerank.data.dataset import load_sequences
from seqrerank.data.prepare import prepare_dataset
from seqrerank.data.sources import (
    DataFormatError,
    download,
    read_amazon_meta,
    read_item_attributes,
    read_ratings_csv,
    read_reviews_json,
    read_sequences,
)
from seqrerank.data.synthetic import build_catalog, generate_demo

BEAUTY = Path(__file__).parents[1].parent / "shared/data/amazon-beauty/Beauty.txt"
NO_FILTERS = {"min_uc": 1, "min_sc": 1}


# --- helpers ------------------------------------------------------------------------------


def write_amazon(raw: Path, rows: list[tuple], titles: dict[str, str] | None = None) -> None:
    """Write ratings_T.csv from (user, item, rating, timestamp) rows and meta_T.json.gz."""
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "ratings_T.csv").write_text("".join(f"{u},{i},{r},{t}\n" for u, i, r, t in rows))
    items = sorted({row[1] for row in rows})
    titles = titles if titles is not None else {item: f"Item {item}" for item in items}
    lines = [repr({"asin": item, "title": titles.get(item, "")}) + "\n" for item in items]
    with gzip.open(raw / "meta_T.json.gz", "wt") as f:
        f.writelines(lines)


def prepare(tmp_path: Path, rows: list[tuple], titles=None, **settings) -> tuple[dict, Path]:
    write_amazon(tmp_path / "raw", rows, titles)
    spec = {"source": "amazon", "category": "T", **NO_FILTERS, **settings}
    out = tmp_path / "out"
    return prepare_dataset(spec, tmp_path / "raw", out), out


def read_splits(out: Path) -> dict[str, dict[int, list[int]]]:
    """{split: {user: items}} from the prepared text files."""
    splits = {}
    for split in ("train", "val", "test"):
        lines = (out / f"{split}.txt").read_text().splitlines()
        splits[split] = {int(u): [int(i) for i in rest] for u, *rest in map(str.split, lines)}
    return splits


def original_ids(out: Path) -> dict[int, str]:
    items = pd.read_csv(out / "items.csv", keep_default_na=False, dtype={"original_id": str})
    return dict(zip(items["item_id"], items["original_id"], strict=True))


def step_counts(stats: dict) -> dict[str, tuple[int, int, int]]:
    return {s["step"]: (s["users"], s["items"], s["interactions"]) for s in stats["filters"]}


def user_rows(user: str, items: str, rating: float = 5.0) -> list[tuple]:
    """One row per character of ``items``, at timestamps 1, 2, ..."""
    return [(user, item, rating, t) for t, item in enumerate(items, 1)]


# --- filters, reindexing and splits -------------------------------------------------------


def test_min_rating_keeps_ratings_at_or_above_the_threshold(tmp_path: Path) -> None:
    rows = (
        user_rows("u1", "abc") + user_rows("u2", "abc") + [("u1", "d", 2.9, 9), ("u2", "e", 3.0, 9)]
    )
    stats, out = prepare(tmp_path, rows, min_rating=3.0)
    assert step_counts(stats)["raw"] == (2, 5, 8)
    assert step_counts(stats)["min_rating"] == (2, 4, 7)
    assert sorted(original_ids(out).values()) == ["a", "b", "c", "e"]


def test_require_title_drops_items_without_a_title(tmp_path: Path) -> None:
    rows = user_rows("u1", "abcd")
    stats, out = prepare(
        tmp_path, rows, {"a": "A", "b": "", "c": "C", "d": "D"}, require_title=True
    )
    assert step_counts(stats)["require_title"] == (1, 3, 3)
    assert list(original_ids(out).values()) == ["a", "c", "d"]


def test_require_title_off_keeps_untitled_items(tmp_path: Path) -> None:
    stats, _ = prepare(tmp_path, user_rows("u1", "abcd"), {"a": "A"})
    assert stats["items"] == 4


def test_k_core_repeats_until_stable(tmp_path: Path) -> None:
    core = [(u, i, 5.0, 1) for u in "ABC" for i in "xyz"]
    # Each removal uncovers the next: u3 (2 items) -> r -> u2 -> p -> u1; one pass is not enough.
    chain = [("u3", "x", 5.0, 1), ("u3", "r", 5.0, 2)]
    chain += [("u2", "y", 5.0, 1), ("u2", "p", 5.0, 2), ("u2", "r", 5.0, 3)]
    chain += [("u1", "x", 5.0, 1), ("u1", "y", 5.0, 2), ("u1", "p", 5.0, 3)]
    stats, out = prepare(tmp_path, core + chain, min_uc=3, min_sc=2)
    assert step_counts(stats)["k_core"] == (3, 3, 9)
    assert list(original_ids(out).values()) == ["x", "y", "z"]


def test_users_with_fewer_than_three_interactions_are_dropped(tmp_path: Path) -> None:
    stats, out = prepare(tmp_path, user_rows("u1", "abc") + user_rows("u2", "ab"))
    assert step_counts(stats)["k_core"] == (2, 3, 5)
    assert step_counts(stats)["min_length_3"] == (1, 3, 3)
    assert stats["users"] == 1 and stats["interactions"] == 3


def test_repeated_interactions_are_dropped_keeping_the_first(tmp_path: Path) -> None:
    # u1 buys a, b, a, c, b: the second a and b go; the low-rated first c does not count.
    rows = user_rows("u1", "abacb") + [("u1", "c", 1.0, 0)] + user_rows("u2", "abc")
    stats, out = prepare(tmp_path, rows, min_rating=3.0)
    assert step_counts(stats)["repeats"] == (2, 3, 6)
    assert stats["repeats"] == "drop"
    splits = read_splits(out)
    assert (splits["train"][1], splits["val"][1], splits["test"][1]) == ([1], [2], [3])


def test_kept_repeats_stay_in_the_sequence_and_the_data_says_so(tmp_path: Path) -> None:
    stats, out = prepare(tmp_path, user_rows("u1", "abacb"), repeats="keep")
    assert step_counts(stats)["repeats"] == (1, 3, 5)
    splits = read_splits(out)
    assert (splits["train"][1], splits["val"][1], splits["test"][1]) == ([1, 2, 1], [3], [2])
    assert load_sequences(out).repeats
    assert not load_sequences(prepare(tmp_path / "b", user_rows("u1", "abc"))[1]).repeats


def test_reindexing_is_from_one_in_sorted_original_order(tmp_path: Path) -> None:
    rows = user_rows("u2", "zyx") + user_rows("u10", "xyz") + user_rows("u1", "yxz")
    _, out = prepare(tmp_path, rows)
    assert original_ids(out) == {1: "x", 2: "y", 3: "z"}
    # Text ids sort as text: u1, u10, u2.
    assert read_splits(out)["test"] == {1: [3], 2: [3], 3: [1]}


def test_integer_ids_are_sorted_numerically(tmp_path: Path) -> None:
    rows = [("7", item, 5.0, t) for t, item in enumerate(["100", "9", "10"])]
    _, out = prepare(tmp_path, rows)
    assert original_ids(out) == {1: "9", 2: "10", 3: "100"}
    assert read_splits(out)["train"] == {1: [3]}


def test_interactions_are_ordered_by_timestamp_then_item(tmp_path: Path) -> None:
    rows = [("u", "b", 5.0, 5), ("u", "d", 5.0, 3), ("u", "c", 5.0, 9), ("u", "a", 5.0, 5)]
    _, out = prepare(tmp_path, rows)
    splits = read_splits(out)  # items a=1, b=2, c=3, d=4; order d, (a, b tie at 5), c
    assert (splits["train"][1], splits["val"][1], splits["test"][1]) == ([4, 1], [2], [3])


def test_leave_one_out_split(tmp_path: Path) -> None:
    rows = user_rows("u1", "abcde") + user_rows("u2", "edc")
    stats, out = prepare(tmp_path, rows)
    splits = read_splits(out)
    assert splits["train"] == {1: [1, 2, 3], 2: [5]}
    assert splits["val"] == {1: [4], 2: [4]}
    assert splits["test"] == {1: [5], 2: [3]}
    assert stats["avg_length"] == 4.0
    assert (out / "items.csv").read_text().splitlines()[0] == "item_id,original_id,title,text,image"


def test_empty_after_filter_names_step_and_setting(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as error:
        prepare(tmp_path, user_rows("u1", "abcdef"), min_uc=20, min_sc=20)
    assert str(error.value) == (
        "dataset is empty after the k-core filter (min_uc=20, min_sc=20): 0 users left; "
        "lower min_uc/min_sc"
    )


def test_missing_files_name_the_path_and_setting(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"ratings_T\.csv.*`ratings`"):
        prepare_dataset({"source": "amazon", "category": "T"}, tmp_path, tmp_path / "out")
    spec = {"source": "sequences", "path": str(tmp_path / "nope.txt")}
    with pytest.raises(FileNotFoundError, match=r"nope\.txt.*`path`"):
        prepare_dataset(spec, tmp_path, tmp_path / "out")


# --- readers ------------------------------------------------------------------------------

REVIEWS = [
    {"reviewerID": "U1", "asin": "B1", "overall": 5.0, "unixReviewTime": 100, "summary": "ok"},
    {"reviewerID": "U2", "asin": "B2", "overall": 2.0, "unixReviewTime": 50},
]


@pytest.mark.parametrize("name", ["reviews_T_5.json", "reviews_T_5.json.gz"])
def test_read_reviews_json(tmp_path: Path, name: str) -> None:
    text = "".join(json.dumps(r) + "\n" for r in REVIEWS)
    path = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text + "\n")  # a trailing blank line is harmless
    df = read_reviews_json(path)
    assert df.to_dict("list") == {
        "user": ["U1", "U2"],
        "item": ["B1", "B2"],
        "rating": [5.0, 2.0],
        "timestamp": [100, 50],
    }
    assert df["timestamp"].dtype == "int64"


def test_prepare_finds_the_reviews_file_when_there_is_no_ratings_csv(tmp_path: Path) -> None:
    rows = [
        {"reviewerID": "U", "asin": a, "overall": 4.0, "unixReviewTime": t}
        for t, a in enumerate("abc")
    ]
    with gzip.open(tmp_path / "reviews_T_5.json.gz", "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    (tmp_path / "meta_T.json").write_text("{'asin': 'a', 'title': 'A'}\n")
    spec = {"source": "amazon", "category": "T", **NO_FILTERS}
    stats = prepare_dataset(spec, tmp_path, tmp_path / "out")
    assert (stats["users"], stats["items"]) == (1, 3)


def test_read_amazon_meta_parses_python_literals(tmp_path: Path) -> None:
    python_only = (  # single quotes, None and an escaped newline: valid Python, not JSON
        "{'asin': 'B1', 'title': \"Kid's Soap &amp; Co\", 'brand': 'Acme', "
        "'categories': [['Beauty', 'Bath'], ['Beauty', 'Soap']], "
        "'description': 'Gentle.\\n  Foam', 'price': None, 'imUrl': 'http://x/B1.jpg'}"
    )
    with gzip.open(tmp_path / "meta.json.gz", "wt") as f:
        f.write(python_only + "\n{'asin': 'B2'}\n")
    with pytest.raises(json.JSONDecodeError):
        json.loads(python_only)
    meta = read_amazon_meta(tmp_path / "meta.json.gz")
    assert meta.to_dict("records") == [
        {
            "item": "B1",
            "title": "Kid's Soap & Co",
            "text": "Kid's Soap & Co. Brand: Acme. Categories: Beauty, Bath, Soap. Gentle. Foam.",
            "image_url": "http://x/B1.jpg",
        },
        {"item": "B2", "title": "", "text": "", "image_url": ""},
    ]
    assert read_amazon_meta(tmp_path / "meta.json.gz", items={"B2"})["item"].tolist() == ["B2"]


def test_sequences_with_attributes(tmp_path: Path) -> None:
    (tmp_path / "seq.txt").write_text("1 10 2 10 3\n2 2 3 10\n\n3 3 2 10\n")
    (tmp_path / "attrs.json").write_text(json.dumps({"10": [4, 5], "2": [7], "99": [1]}))
    spec = {
        "source": "sequences",
        "path": str(tmp_path / "seq.txt"),
        "attributes": str(tmp_path / "attrs.json"),
        "repeats": "keep",
        **NO_FILTERS,
    }
    stats = prepare_dataset(spec, tmp_path, tmp_path / "out")
    assert (stats["users"], stats["items"], stats["interactions"]) == (3, 3, 10)
    items = pd.read_csv(tmp_path / "out/items.csv", keep_default_na=False, dtype=str)
    assert list(items.columns) == ["item_id", "original_id", "title", "text", "image", "attributes"]
    assert items["original_id"].tolist() == ["2", "3", "10"]
    assert items["attributes"].tolist() == ["7", "", "4 5"]
    splits = read_splits(tmp_path / "out")  # the repeated item 10 stays (repeats: keep)
    assert splits["train"][1] == [3, 1] and splits["val"][1] == [3] and splits["test"][1] == [2]
    timestamps = read_sequences(tmp_path / "seq.txt").query("user == '1'")["timestamp"]
    assert timestamps.tolist() == [0, 1, 2, 3]


# --- malformed input ----------------------------------------------------------------------


def test_ratings_csv_with_a_wrong_field_count(tmp_path: Path) -> None:
    path = tmp_path / "ratings_Bad.csv"
    path.write_text("A1,B1,5.0,100\n\nA1,B2,5.0\nA2,B1,4.0,200\n")
    with pytest.raises(DataFormatError) as error:
        read_ratings_csv(path)
    message = str(error.value)
    assert message.startswith(f"{path}:3: expected 4 comma-separated fields")
    assert "got 3" in message and "'A1,B2,5.0'" in message and "Fix or delete" in message


def test_ratings_csv_with_too_many_fields(tmp_path: Path) -> None:
    path = tmp_path / "ratings_Bad.csv"
    path.write_text("A1,B1,5.0,100\nA1,B2,5.0,100,extra\n")
    with pytest.raises(DataFormatError, match=r"ratings_Bad\.csv:2: .* got 5"):
        read_ratings_csv(path)


def test_ratings_csv_with_a_non_numeric_rating(tmp_path: Path) -> None:
    path = tmp_path / "ratings_Bad.csv"
    path.write_text("A1,B1,5.0,100\nA1,B2,4.0,101\nA1,B3,five,102\n")
    with pytest.raises(DataFormatError, match=r"ratings_Bad\.csv:3: .*non-numeric rating 'five'"):
        read_ratings_csv(path)


def test_reviews_line_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "reviews.json"
    path.write_text(json.dumps(REVIEWS[0]) + "\n{'reviewerID': 'U'}\n")
    with pytest.raises(DataFormatError, match=r"reviews\.json:2: expected a JSON object"):
        read_reviews_json(path)


def test_meta_line_that_is_not_a_python_literal(tmp_path: Path) -> None:
    path = tmp_path / "meta_Bad.json.gz"
    with gzip.open(path, "wt") as f:
        f.write("{'asin': 'B1'}\n{'asin': 'B2', 'title': open('x')}\n")
    with pytest.raises(DataFormatError, match=r"meta_Bad\.json\.gz:2: expected a Python dict"):
        read_amazon_meta(path)


def test_bad_sequence_line(tmp_path: Path) -> None:
    path = tmp_path / "seq.txt"
    path.write_text("1 5 6 7\n2\n")
    with pytest.raises(DataFormatError, match=r"seq\.txt:2: expected a user id followed by"):
        read_sequences(path)
    path.write_text("1 5 6 7\n2 5 6\n1 8\n")
    with pytest.raises(DataFormatError, match=r"seq\.txt:3: .*user '1' again \(first on line 1\)"):
        read_sequences(path)


def test_sequence_file_with_a_non_integer_token(tmp_path: Path) -> None:
    path = tmp_path / "seq.txt"
    path.write_text("1 5 6 7\n2 5 12x 7\n")
    with pytest.raises(DataFormatError) as error:
        read_sequences(path)
    message = str(error.value)
    assert message.startswith(f"{path}:2: expected integer user and item ids, got the token '12x'")
    assert "Fix or delete this line" in message


# One reader per raw format: (reader, file name, three lines; the third has a non-ASCII letter).
RAW_FORMATS = {
    "ratings": (read_ratings_csv, "ratings_T.csv", ["A1,B1,5.0,1", "A2,B1,4.0,2", "Aé,B2,5.0,3"]),
    "reviews": (
        read_reviews_json,
        "reviews_T_5.json.gz",
        [json.dumps({**REVIEWS[0], "reviewerID": user}, ensure_ascii=False) for user in "ABé"],
    ),
    "meta": (read_amazon_meta, "meta_T.json.gz", [repr({"asin": a}) for a in ("B1", "B2", "Bé")]),
    "sequences": (read_sequences, "seq.txt", ["1 2 3", "2 3 4", "3 4 5 é"]),
    "attributes": (read_item_attributes, "attrs.json", ['{"1": [1],', '"2": [2],', '"é": [3]}']),
}


# Line makers of the gzip formats: a line for any id.
GZIP_LINES = {
    "reviews": lambda key: json.dumps({**REVIEWS[0], "reviewerID": key}),
    "meta": lambda key: repr({"asin": key}),
}


def write_raw(path: Path, data: bytes) -> None:
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


@pytest.mark.parametrize("kind", RAW_FORMATS)
def test_a_file_that_is_not_utf8_names_its_line(tmp_path: Path, kind: str) -> None:
    reader, name, lines = RAW_FORMATS[kind]
    path = tmp_path / name
    write_raw(path, "\n".join(lines).encode("latin-1") + b"\n")
    with pytest.raises(DataFormatError) as error:
        reader(path)
    message = str(error.value)
    assert message.startswith(f"{path}:3: expected UTF-8 text, got the byte 0xe9"), message
    assert "Convert the file to UTF-8" in message


@pytest.mark.parametrize("kind", GZIP_LINES)
def test_a_gz_file_that_is_not_gzip_says_so(tmp_path: Path, kind: str) -> None:
    reader, name, lines = RAW_FORMATS[kind]
    path = tmp_path / name
    path.write_text("\n".join(lines[:2]) + "\n")
    with pytest.raises(DataFormatError) as error:
        reader(path)
    message = str(error.value)
    assert message.startswith(f"{path}: expected gzip data (its name ends in .gz)"), message
    assert "remove .gz from its name" in message


@pytest.mark.parametrize("kind", GZIP_LINES)
def test_a_truncated_gzip_file_names_the_line_where_it_breaks(tmp_path: Path, kind: str) -> None:
    reader, name, _ = RAW_FORMATS[kind]
    path = tmp_path / name
    # Ids that do not compress away, so that half of the file holds many lines.
    keys = (hashlib.sha256(bytes(i)).hexdigest() for i in range(2000))
    text = "".join(GZIP_LINES[kind](key) + "\n" for key in keys)
    compressed = gzip.compress(text.encode())
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(DataFormatError) as error:
        reader(path)
    message = str(error.value)
    match = re.match(
        rf"{re.escape(str(path))}:(\d+): the gzip data is truncated or corrupt", message
    )
    assert match and 100 < int(match.group(1)) < 2000, message
    assert "Download the file again" in message


# --- images -------------------------------------------------------------------------------


def test_images_are_resized_and_unreadable_ones_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    images = tmp_path / "img"
    images.mkdir()
    Image.new("RGB", (1000, 500), (200, 10, 10)).save(images / "a.png")
    Image.new("RGBA", (40, 60), (0, 0, 0, 0)).save(images / "b.png")
    (images / "c.jpg").write_bytes(b"not an image")
    rows = user_rows("u1", "abcd")
    with caplog.at_level(logging.WARNING, logger="seqrerank.data"):
        stats, out = prepare(tmp_path, rows, images_dir=str(images))
    items = pd.read_csv(out / "items.csv", keep_default_na=False)
    assert items["image"].tolist() == ["images/1.png", "images/2.png", "", ""]
    assert stats["missing_images"] == 2
    assert "c.jpg" in caplog.text and "1 of 4 items have no image" in caplog.text
    with Image.open(out / "images/1.png") as big, Image.open(out / "images/2.png") as small:
        assert (big.size, big.mode) == ((448, 224), "RGB")
        assert small.size == (40, 60)  # never upscaled
        assert small.getpixel((0, 0)) == (255, 255, 255)  # transparency becomes white

    converted = (out / "images/1.png").stat().st_mtime_ns
    prepare(tmp_path, rows, images_dir=str(images))
    assert (out / "images/1.png").stat().st_mtime_ns == converted  # up to date: not redone


def test_stale_image_of_another_item_is_replaced(tmp_path: Path) -> None:
    images = tmp_path / "img"
    images.mkdir()
    Image.new("RGB", (8, 8), "red").save(images / "a.png")
    Image.new("RGB", (8, 8), "blue").save(images / "b.png")
    prepare(tmp_path, user_rows("u1", "abc"), images_dir=str(images))
    # Without item a, item b becomes item 1; its old output must not be reused.
    prepare(tmp_path, user_rows("u1", "bcd"), images_dir=str(images))
    with Image.open(tmp_path / "out/images/1.png") as image:
        assert image.getpixel((0, 0)) == (0, 0, 255)


# --- demo generator -----------------------------------------------------------------------


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_demo_generator_is_deterministic(tmp_path: Path) -> None:
    small = {"num_users": 60, "num_items": 40, "num_categories": 4}
    for name, seed in [("a", 1), ("b", 1), ("c", 2)]:
        generate_demo(tmp_path / name, seed=seed, **small)
    first, again, other = (file_bytes(tmp_path / name) for name in "abc")
    assert len(first) == 2 + 40 and first == again
    assert first["ratings_Demo.csv"] != other["ratings_Demo.csv"]
    assert first["meta_Demo.json.gz"] != other["meta_Demo.json.gz"]


def test_demo_has_sequential_signal(tmp_path: Path) -> None:
    spec = {"source": "synthetic", "min_rating": 3.0, "require_title": True}
    stats = prepare_dataset(spec, tmp_path / "raw", tmp_path / "out", seed=7)
    counts = step_counts(stats)
    assert stats["users"] > 500 and stats["items"] > 200 and stats["missing_images"] == 0
    assert counts["min_rating"][2] < counts["raw"][2]  # the noise is there, and filtered
    assert counts["require_title"][1] < counts["min_rating"][1]
    assert counts["k_core"][0] < counts["require_title"][0]

    catalog = build_catalog(seed=7)
    index = {asin: i for i, asin in enumerate(catalog.asins)}
    asin_of = original_ids(tmp_path / "out")
    item_of = {asin: item_id for item_id, asin in asin_of.items()}
    splits = read_splits(tmp_path / "out")
    most_popular = Counter(i for seq in splits["train"].values() for i in seq).most_common(1)[0][0]
    oracle_hits = popularity_hits = 0
    for user, (last_seen,) in splits["val"].items():
        following = catalog.next_in_order(index[asin_of[last_seen]])
        target = splits["test"][user][0]
        oracle_hits += following is not None and item_of.get(catalog.asins[following]) == target
        popularity_hits += most_popular == target
    assert oracle_hits / len(splits["val"]) > 0.4
    assert oracle_hits > 5 * popularity_hits


# --- download -----------------------------------------------------------------------------

PAYLOAD = os.urandom(3000)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


class FileServer(ThreadingHTTPServer):
    """Serves PAYLOAD; records each request's Range header; can misbehave on purpose."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), RangeHandler)
        self.ranges: list[str | None] = []
        self.honour_range = True
        self.truncate_first = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/file.bin"


class RangeHandler(BaseHTTPRequestHandler):
    server: FileServer

    def do_GET(self) -> None:
        header = self.headers.get("Range")
        self.server.ranges.append(header)
        start = int(header.removeprefix("bytes=").rstrip("-")) if header else 0
        if not self.server.honour_range:
            start = 0
        if start >= len(PAYLOAD):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = PAYLOAD[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        self.end_headers()
        if self.server.truncate_first:
            self.server.truncate_first = False
            body = body[: len(body) // 2]  # then the connection closes: a dropped download
            self.close_connection = True
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[FileServer]:
    with serving(FileServer()) as httpd:
        yield httpd


def test_download_full_file(tmp_path: Path, server: FileServer) -> None:
    dest = download(server.url, tmp_path / "sub/file.bin", sha256=DIGEST)
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / "sub/file.bin.part").exists()
    assert server.ranges == [None]


def test_download_resumes_a_partial_file(tmp_path: Path, server: FileServer) -> None:
    (tmp_path / "file.bin.part").write_bytes(PAYLOAD[:1000])
    download(server.url, tmp_path / "file.bin", sha256=DIGEST)
    assert (tmp_path / "file.bin").read_bytes() == PAYLOAD
    assert server.ranges == ["bytes=1000-"]


def test_download_finishes_a_complete_part_file(tmp_path: Path, server: FileServer) -> None:
    (tmp_path / "file.bin.part").write_bytes(PAYLOAD)
    download(server.url, tmp_path / "file.bin", sha256=DIGEST)
    assert (tmp_path / "file.bin").read_bytes() == PAYLOAD
    assert server.ranges == [f"bytes={len(PAYLOAD)}-"]


def test_download_resumes_after_a_dropped_connection(tmp_path: Path, server: FileServer) -> None:
    server.truncate_first = True
    download(server.url, tmp_path / "file.bin", sha256=DIGEST, backoff=0)
    assert (tmp_path / "file.bin").read_bytes() == PAYLOAD
    assert server.ranges == [None, "bytes=1500-"]


def test_download_restarts_when_the_server_ignores_range(
    tmp_path: Path, server: FileServer
) -> None:
    server.honour_range = False
    (tmp_path / "file.bin.part").write_bytes(b"x" * 1000)
    download(server.url, tmp_path / "file.bin", sha256=DIGEST)
    assert (tmp_path / "file.bin").read_bytes() == PAYLOAD


def test_download_checksum_mismatch(tmp_path: Path, server: FileServer) -> None:
    wrong = "0" * 64
    with pytest.raises(ValueError, match=f"expected {wrong}, got {DIGEST}"):
        download(server.url, tmp_path / "file.bin", sha256=wrong)
    assert not (tmp_path / "file.bin").exists() and not (tmp_path / "file.bin.part").exists()


def test_download_does_not_retry_a_host_name_that_does_not_resolve(
    tmp_path: Path, name_lookups: list[str]
) -> None:
    with pytest.raises(OSError, match="Errno"):
        download(UNRESOLVABLE_URL, tmp_path / "f.csv", retries=3, backoff=0.01)
    assert name_lookups == ["nonexistent.invalid"]


def test_download_of_a_present_file_only_checks_it(tmp_path: Path, server: FileServer) -> None:
    (tmp_path / "file.bin").write_bytes(PAYLOAD)
    assert download(server.url, tmp_path / "file.bin", sha256=DIGEST) == tmp_path / "file.bin"
    with pytest.raises(ValueError, match="sha256 mismatch"):
        download(server.url, tmp_path / "file.bin", sha256="0" * 64)
    assert server.ranges == []


# --- real data ----------------------------------------------------------------------------


def test_real_beauty_sequences(tmp_path: Path) -> None:
    if not BEAUTY.exists():
        pytest.skip(f"{BEAUTY} is not available")
    spec = {
        "source": "sequences",
        "path": str(BEAUTY),
        "min_uc": 5,
        "min_sc": 5,
        "attributes": str(BEAUTY.with_name("Beauty_item2attributes.json")),
    }
    stats = prepare_dataset(spec, tmp_path, tmp_path / "out")
    assert (stats["users"], stats["items"], stats["interactions"]) == (22_363, 12_101, 198_502)
    items = pd.read_csv(tmp_path / "out/items.csv", keep_default_na=False, dtype=str)
    assert (items["attributes"] != "").all()
