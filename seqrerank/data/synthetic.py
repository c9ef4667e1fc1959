"""Deterministic demo data written in the Amazon 2014 raw format.

The demo goes through the same reader and filters as real data, and carries signal that the
methods can find. Every item belongs to a latent category, which sets

* its title ("Rose Matte Lipstick 12": category nouns and adjectives; the number is the item's
  position in its category's product line) and its brand/categories metadata,
* its 64x64 PNG image (category shape and colour; the shape grows along the product line),
* users' transitions: a user prefers 1-2 categories and mostly moves to the next item in the
  category's fixed order, else to a random item of a preferred category, else to a popular one.

So a sequential model beats popularity, and a text/image-aware model can beat an ID-only one.
Noise for the filters to remove: ratings below 3 on random items, untitled items, rare items
and short users.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from dataclasses import astuple, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from seqrerank.data.layout import DEMO_CATEGORY as CATEGORY
from seqrerank.io import atomic_path

IMAGE_SIZE = 64
RARE_FRACTION = 0.05  # items seen 1-3 times in total: the k-core filter removes them
UNTITLED_FRACTION = 0.03  # items without a title, reached by popularity jumps only
SHORT_USER_FRACTION = 0.05  # users with fewer than min_length interactions
LOW_RATING_RATE = 0.08  # chance per step of an extra random item rated 1-2
P_SAME_CATEGORY = 0.25  # else (after p_next) a random item of a preferred category
ZIPF_EXPONENT = 1.0
DAY = 86_400
START_TIME = 1_300_000_000


@dataclass(frozen=True)
class Theme:
    name: str
    nouns: tuple[str, ...]
    adjectives: tuple[str, ...]
    brands: tuple[str, ...]
    shape: str
    colour: tuple[int, int, int]


THEMES = (
    Theme(
        "Lipstick",
        ("Lipstick", "Lip Gloss"),
        ("Rose", "Matte", "Velvet", "Coral"),
        ("Rouge & Co", "Lumi"),
        "circle",
        (200, 30, 60),
    ),
    Theme(
        "Shampoo",
        ("Shampoo", "Conditioner"),
        ("Herbal", "Silky", "Volume", "Citrus"),
        ("Aqua Hair", "Nordvik"),
        "square",
        (40, 120, 220),
    ),
    Theme(
        "Nail Polish",
        ("Nail Polish", "Top Coat"),
        ("Glitter", "Neon", "Pastel", "Chrome"),
        ("Nailed It", "Polly"),
        "triangle",
        (230, 120, 200),
    ),
    Theme(
        "Perfume",
        ("Eau de Parfum", "Body Mist"),
        ("Amber", "Floral", "Musk", "Vanilla"),
        ("Maison Lune", "Odeur"),
        "diamond",
        (150, 80, 200),
    ),
    Theme(
        "Face Cream",
        ("Face Cream", "Serum"),
        ("Hydrating", "Firming", "Soothing", "Aloe"),
        ("DermaPure", "Skinly"),
        "ring",
        (240, 200, 120),
    ),
    Theme(
        "Mascara",
        ("Mascara", "Eyeliner"),
        ("Jet Black", "Waterproof", "Curling", "Bold"),
        ("Lashique", "Kohl Lab"),
        "cross",
        (30, 30, 30),
    ),
    Theme(
        "Sunscreen",
        ("Sunscreen", "After-Sun Gel"),
        ("SPF 50", "Mineral", "Sport", "Light"),
        ("SunSafe", "Solara"),
        "stripes",
        (250, 170, 20),
    ),
    Theme(
        "Hair Brush",
        ("Hair Brush", "Comb"),
        ("Boar", "Detangling", "Paddle", "Bamboo"),
        ("Brushworks", "Tanglo"),
        "hexagon",
        (120, 80, 40),
    ),
    Theme(
        "Soap",
        ("Soap Bar", "Hand Wash"),
        ("Lavender", "Oatmeal", "Olive", "Charcoal"),
        ("Savon Doux", "Lather"),
        "star",
        (100, 190, 110),
    ),
    Theme(
        "Eye Shadow",
        ("Eye Shadow", "Palette"),
        ("Smoky", "Shimmer", "Bronze", "Violet"),
        ("Glamour Box", "Hue"),
        "x",
        (90, 60, 160),
    ),
    Theme(
        "Toothpaste",
        ("Toothpaste", "Mouthwash"),
        ("Mint", "Whitening", "Fresh", "Herbal"),
        ("BrightSmile", "Denta"),
        "dots",
        (60, 200, 210),
    ),
    Theme(
        "Candle",
        ("Scented Candle", "Wax Melt"),
        ("Cedar", "Sea Salt", "Cinnamon", "Fig"),
        ("Wick & Co", "Glow"),
        "frame",
        (180, 60, 30),
    ),
)


@dataclass(frozen=True)
class Catalog:
    """The latent structure of the demo items (item index = position in ``asins``)."""

    asins: list[str]
    category: np.ndarray  # theme index of each item
    orders: list[np.ndarray]  # per category: item indices of its product line, in order
    untitled: np.ndarray  # indices of items without a title
    rare: np.ndarray  # indices of items that appear only 1-3 times
    popularity: np.ndarray  # Zipf-like probability of each item in a popularity jump

    def position(self, item: int) -> int:
        """Position of ``item`` in its category's product line (-1 when not in one)."""
        order = self.orders[self.category[item]]
        hits = np.flatnonzero(order == item)
        return int(hits[0]) if hits.size else -1

    def next_in_order(self, item: int) -> int | None:
        """The item after ``item`` in its product line (wrapping), or None when not in one."""
        pos = self.position(item)
        if pos < 0:
            return None
        order = self.orders[self.category[item]]
        return int(order[(pos + 1) % len(order)])


def build_catalog(seed: int = 42, num_items: int = 300, num_categories: int = 8) -> Catalog:
    """Draw the demo items, categories, product lines and popularity (deterministic by seed)."""
    if not 1 <= num_categories <= len(THEMES):
        raise ValueError(
            f"num_categories must be between 1 and {len(THEMES)}, not {num_categories}"
        )
    rng = _rngs(seed)[0]
    num_rare = round(RARE_FRACTION * num_items)
    num_untitled = round(UNTITLED_FRACTION * num_items)
    num_lined = num_items - num_rare - num_untitled
    if num_lined < 2 * num_categories:
        raise ValueError(
            f"num_items={num_items} is too small for {num_categories} categories; "
            f"use at least {3 * num_categories}"
        )
    numbers = rng.choice(10**8, size=num_items, replace=False)
    asins = [f"B0{n:08d}" for n in numbers]
    category = rng.integers(0, num_categories, size=num_items)
    category[:num_lined] = np.arange(num_lined) % num_categories  # balanced product lines
    orders = [
        rng.permutation(np.flatnonzero(category[:num_lined] == c)) for c in range(num_categories)
    ]
    popularity = np.zeros(num_items)
    jump_targets = np.arange(num_items - num_rare)  # product-line and untitled items
    ranks = rng.permutation(len(jump_targets)) + 1
    popularity[jump_targets] = 1.0 / ranks**ZIPF_EXPONENT
    return Catalog(
        asins=asins,
        category=category,
        orders=orders,
        untitled=np.arange(num_lined, num_lined + num_untitled),
        rare=np.arange(num_items - num_rare, num_items),
        popularity=popularity / popularity.sum(),
    )


@dataclass(frozen=True)
class DemoFiles:
    ratings: Path
    meta: Path
    images: Path

    @classmethod
    def in_folder(cls, raw_dir: str | os.PathLike) -> DemoFiles:
        raw_dir = Path(raw_dir)
        return cls(
            ratings=raw_dir / f"ratings_{CATEGORY}.csv",
            meta=raw_dir / f"meta_{CATEGORY}.json.gz",
            images=raw_dir / "images",
        )


def generate_demo(
    out: DemoFiles | str | os.PathLike,
    seed: int = 42,
    num_users: int = 1000,
    num_items: int = 300,
    num_categories: int = 8,
    min_length: int = 5,
    max_length: int = 20,
    p_next: float = 0.6,
) -> DemoFiles:
    """Write the demo's ratings CSV, metadata and ``<asin>.png`` images: to ``out``'s files, or
    as ``ratings_Demo.csv``, ``meta_Demo.json.gz`` and ``images/`` into the folder ``out``."""
    if num_users < 1:
        raise ValueError(f"num_users must be at least 1, got {num_users}")
    if not 2 <= min_length <= max_length:
        raise ValueError(f"need 2 <= min_length <= max_length, got {min_length}, {max_length}")
    if not 0 <= p_next <= 1 - P_SAME_CATEGORY:
        raise ValueError(f"p_next must be between 0 and {1 - P_SAME_CATEGORY}, got {p_next}")
    files = DemoFiles(*map(Path, astuple(out))) if isinstance(out, DemoFiles) else None
    files = files or DemoFiles.in_folder(out)
    catalog = build_catalog(seed, num_items, num_categories)
    _, user_rng, content_rng = _rngs(seed)
    histories = [
        _user_history(catalog, user_rng, min_length, max_length, p_next) for _ in range(num_users)
    ]
    _add_rare_items(catalog, user_rng, histories)
    user_ids = [f"A{n:012d}" for n in user_rng.choice(10**12, size=num_users, replace=False)]
    _write_ratings(files.ratings, catalog, user_ids, histories, user_rng)
    _write_meta(files.meta, catalog, content_rng)
    for item, asin in enumerate(catalog.asins):
        _write_image(files.images / f"{asin}.png", catalog, item, content_rng)
    return files


def _rngs(seed: int) -> list[np.random.Generator]:
    """Independent streams for the catalog, the users and the content, so each is reproducible
    on its own (e.g. tests rebuild the catalog without generating users)."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)]


# --- Interactions -------------------------------------------------------------------------

Event = tuple[int, float]  # (item index, rating)


def _user_history(
    catalog: Catalog, rng: np.random.Generator, min_length: int, max_length: int, p_next: float
) -> list[Event]:
    if rng.random() < SHORT_USER_FRACTION:
        length = int(rng.integers(1, min_length))
    else:
        length = int(rng.integers(min_length, max_length + 1))
    num_prefs = int(rng.integers(1, 3))
    preferred = rng.choice(len(catalog.orders), size=num_prefs, replace=False)
    item = int(rng.choice(catalog.orders[preferred[0]]))
    events: list[Event] = []
    for step in range(length):
        if step:
            item = _next_item(catalog, rng, item, preferred, p_next)
        events.append((item, float(rng.choice([3.0, 4.0, 5.0], p=[0.1, 0.3, 0.6]))))
        if rng.random() < LOW_RATING_RATE:
            noise = int(rng.integers(0, len(catalog.asins) - len(catalog.rare)))
            events.append((noise, float(rng.choice([1.0, 2.0]))))
    return events


def _next_item(
    catalog: Catalog, rng: np.random.Generator, item: int, preferred: np.ndarray, p_next: float
) -> int:
    draw = rng.random()
    following = catalog.next_in_order(item)
    if draw < p_next and following is not None:
        return following
    if draw < p_next + P_SAME_CATEGORY:
        return int(rng.choice(catalog.orders[rng.choice(preferred)]))
    return int(rng.choice(len(catalog.asins), p=catalog.popularity))


def _add_rare_items(
    catalog: Catalog, rng: np.random.Generator, histories: list[list[Event]]
) -> None:
    """Insert each rare item 1-3 times, well-rated, at random places in random histories."""
    for item in catalog.rare:
        count = min(int(rng.integers(1, 4)), len(histories))
        for user in rng.choice(len(histories), size=count, replace=False):
            history = histories[user]
            history.insert(int(rng.integers(0, len(history) + 1)), (int(item), 5.0))


def _write_ratings(
    path: Path,
    catalog: Catalog,
    user_ids: list[str],
    histories: list[list[Event]],
    rng: np.random.Generator,
) -> None:
    """Daily timestamps (as in Amazon), strictly increasing per user; rows sorted by item."""
    rows = []
    for user, history in zip(user_ids, histories, strict=True):
        gaps = rng.integers(1, 30, size=len(history)) * DAY
        start = START_TIME + int(rng.integers(0, 3 * 365)) * DAY
        for (item, rating), timestamp in zip(history, start + np.cumsum(gaps), strict=True):
            rows.append((catalog.asins[item], user, rating, int(timestamp)))
    rows.sort()
    lines = [f"{user},{asin},{rating},{timestamp}\n" for asin, user, rating, timestamp in rows]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(lines))


# --- Metadata and images ------------------------------------------------------------------


def _write_meta(path: Path, catalog: Catalog, rng: np.random.Generator) -> None:
    """One ``repr(dict)`` per line, like the real (non-JSON) 2014 metadata dump."""
    untitled = set(catalog.untitled.tolist())
    lines = []
    for item, asin in enumerate(catalog.asins):
        theme = THEMES[catalog.category[item]]
        adjectives = rng.choice(theme.adjectives, size=2, replace=False)
        noun = str(rng.choice(theme.nouns))
        entry: dict = {"asin": asin}
        if item not in untitled:
            position = catalog.position(item)
            number = position + 1 if position >= 0 else int(rng.integers(50, 100))
            entry["title"] = f"{adjectives[0]} {adjectives[1]} {noun} {number}"
        entry |= {
            "imUrl": f"http://images.example.com/{asin}.png",
            "brand": str(rng.choice(theme.brands)),
            "categories": [["Beauty", theme.name]],
            "description": f"A {adjectives[0].lower()} {noun.lower()} for every day.",
            "price": round(float(rng.uniform(3, 40)), 2),
            "salesRank": {"Beauty": int(rng.integers(1, 100_000))},
        }
        lines.append(repr(entry) + "\n")
    # No file name or time in the gzip header, so the same seed gives identical bytes.
    with (
        atomic_path(path) as tmp,
        open(tmp, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
    ):
        gz.write("".join(lines).encode("utf-8"))


def _write_image(path: Path, catalog: Catalog, item: int, rng: np.random.Generator) -> None:
    theme = THEMES[catalog.category[item]]
    line_length = len(catalog.orders[catalog.category[item]])
    position = catalog.position(item)
    growth = position / max(line_length - 1, 1) if position >= 0 else rng.random()
    radius = 12 + 14 * growth + rng.uniform(-1, 1)
    centre = IMAGE_SIZE / 2 + rng.uniform(-4, 4, size=2)
    colour = tuple(
        int(c) for c in np.clip(np.array(theme.colour) + rng.integers(-20, 21, 3), 0, 255)
    )
    background = 235 + rng.normal(0, 6, (IMAGE_SIZE, IMAGE_SIZE, 3))  # light, noisy
    image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    SHAPES[theme.shape](ImageDraw.Draw(image), float(centre[0]), float(centre[1]), radius, colour)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


Colour = tuple[int, ...]
ShapeDrawer = Callable[[ImageDraw.ImageDraw, float, float, float, Colour], None]


def _regular_polygon(sides: int, rotation: float) -> ShapeDrawer:
    def draw(d: ImageDraw.ImageDraw, x: float, y: float, r: float, colour: Colour) -> None:
        d.regular_polygon((x, y, r), sides, rotation=rotation, fill=colour)

    return draw


def _star(d: ImageDraw.ImageDraw, x: float, y: float, r: float, colour: Colour) -> None:
    angles = np.pi / 2 + np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
    d.polygon(
        list(zip(x + radii * np.cos(angles), y - radii * np.sin(angles), strict=True)), fill=colour
    )


def _cross(d: ImageDraw.ImageDraw, x: float, y: float, r: float, colour: Colour) -> None:
    d.rectangle((x - r, y - r / 3, x + r, y + r / 3), fill=colour)
    d.rectangle((x - r / 3, y - r, x + r / 3, y + r), fill=colour)


def _x(d: ImageDraw.ImageDraw, x: float, y: float, r: float, colour: Colour) -> None:
    width = max(int(r / 2.5), 1)
    d.line((x - r, y - r, x + r, y + r), fill=colour, width=width)
    d.line((x - r, y + r, x + r, y - r), fill=colour, width=width)


def _stripes(d: ImageDraw.ImageDraw, x: float, y: float, r: float, colour: Colour) -> None:
    for offset in (-r, -r / 5, r * 3 / 5):
        d.rectangle((x - r, y + offset, x + r, y + offset + r * 2 / 5), fill=colour)


def _dots(d: ImageDraw.ImageDraw, x: float, y: float, r: float, colour: Colour) -> None:
    for dx in (-r / 2, r / 2):
        for dy in (-r / 2, r / 2):
            d.ellipse((x + dx - r / 3, y + dy - r / 3, x + dx + r / 3, y + dy + r / 3), fill=colour)


SHAPES: dict[str, ShapeDrawer] = {
    "circle": lambda d, x, y, r, c: d.ellipse((x - r, y - r, x + r, y + r), fill=c),
    "square": _regular_polygon(4, 0),
    "triangle": _regular_polygon(3, 0),
    "diamond": _regular_polygon(4, 45),
    "ring": lambda d, x, y, r, c: d.ellipse(
        (x - r, y - r, x + r, y + r), outline=c, width=max(int(r / 3), 1)
    ),
    "cross": _cross,
    "stripes": _stripes,
    "hexagon": _regular_polygon(6, 0),
    "star": _star,
    "x": _x,
    "dots": _dots,
    "frame": lambda d, x, y, r, c: d.rectangle(
        (x - r, y - r, x + r, y + r), outline=c, width=max(int(r / 3), 1)
    ),
}
