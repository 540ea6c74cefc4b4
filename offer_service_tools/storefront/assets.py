"""The demo shop's files: its static assets and a generated SVG tile per product."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources

from offer_service.domain.products import Product
from offer_service.templating import environment

SVG_HEADERS = {
    "Content-Security-Policy": "default-src 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "public, max-age=300",
}
ASSET_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "public, max-age=300"}
ASSET_TYPES = {
    "css": "text/css; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "svg": "image/svg+xml",
}
# Two gradient stops per category for the product tiles.
TILE_COLOURS = {
    "cameras": ("#1f3b4d", "#3c6e8f"),
    "memory": ("#3f3d7a", "#6c69b8"),
    "camera-accessories": ("#264653", "#2a9d8f"),
    "bags": ("#5c4033", "#9c6b4e"),
    "tripods": ("#2f4f3a", "#5f8f63"),
    "coffee": ("#4b2e1e", "#8a5a3b"),
    "coffee-gear": ("#6b3f2a", "#c07f4f"),
    "skincare": ("#a15c6b", "#e2a3ad"),
}
FALLBACK_COLOURS = (
    ("#37474f", "#78909c"),
    ("#4a148c", "#8e63c7"),
    ("#004d40", "#3f9c8c"),
    ("#8d3b1f", "#d17b4f"),
)
# The icon (templates/storefront/icons/<name>.svg) of each category; others show initials.
CATEGORY_ICONS = {
    "cameras": "camera",
    "memory": "card",
    "camera-accessories": "lens",
    "bags": "bag",
    "tripods": "tripod",
    "coffee": "bean",
    "coffee-gear": "cup",
    "skincare": "bottle",
}


def initials(title: str) -> str:
    words = [w for w in title.split() if w[:1].isalnum()]
    letters = "".join(w[0] for w in words if w[0].isalpha())[:2]
    return (letters or "".join(words)[:2] or "?").upper()


def title_lines(title: str, width: int = 20) -> list[str]:
    """The title wrapped at `width` characters, in at most two lines."""
    lines: list[str] = []
    current = ""
    for word in title.split():
        candidate = f"{current} {word}".strip()
        if len(candidate) <= width or not current:
            current = candidate
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    if len(lines) > 2:
        lines = [lines[0], lines[1] + "…"]
    return [line if len(line) <= width + 1 else line[: width - 1] + "…" for line in lines]


def product_svg(product: Product) -> str:
    """A 400x400 tile: the category's colours, a simple icon (or initials), the title."""
    colours = TILE_COLOURS.get(product.category)
    if colours is None:
        digest = hashlib.sha256(product.category.encode()).digest()
        colours = FALLBACK_COLOURS[digest[0] % len(FALLBACK_COLOURS)]
    template = environment("offer_service_tools").get_template("storefront/tile.svg")
    return template.render(
        title=product.title,
        light=colours[1],
        dark=colours[0],
        icon=CATEGORY_ICONS.get(product.category, ""),
        initials=initials(product.title),
        lines=title_lines(product.title),
    )


@lru_cache(maxsize=16)
def asset(name: str) -> bytes | None:
    """A file of offer_service_tools/static/demo/ (a plain name: no directories, no dot files)."""
    if "/" in name or "\\" in name or name.startswith("."):
        return None
    try:
        return resources.files("offer_service_tools").joinpath("static", "demo", name).read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None
