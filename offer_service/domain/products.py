"""Products as the engine sees them: prices in minor units, families and tiers, flags."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from offer_service.types import ProductFlag, ProductId


@dataclass(frozen=True, slots=True)
class Product:
    """One offerable (or explicitly non-offerable) catalog item. Money in minor units."""

    id: ProductId
    title: str
    price: int
    currency: str = "USD"
    url: str = ""
    image_url: str = ""
    category: str = ""
    cost: int | None = None
    compare_at_price: int | None = None
    family: str | None = None
    tier: int | None = None
    tags: tuple[str, ...] = ()
    inventory: int | None = None  # None: not tracked
    active: bool = True
    complements: tuple[ProductId, ...] = ()
    flags: tuple[ProductFlag, ...] = field(default=())
    replenish_days: int | None = None

    @property
    def is_fee(self) -> bool:
        return "fee" in self.flags

    @property
    def on_sale(self) -> bool:
        return self.compare_at_price is not None and self.compare_at_price > self.price

    @property
    def in_stock(self) -> bool:
        return self.inventory is None or self.inventory > 0


# Online Retail stock codes of real products start with five digits; the rest are fees and
# accounting lines (POST, DOT, M, BANK CHARGES, AMAZONFEE, gift_0001_...), except a few real
# products that the data set codes differently.
_PRODUCT_CODE = re.compile(r"^\d{5}")
_NON_NUMERIC_PRODUCTS = re.compile(r"^(DCGS|PADS)", re.IGNORECASE)


def is_product_code(stock_code: str) -> bool:
    """Whether an Online Retail stock code names a real product rather than a fee line."""
    return bool(_PRODUCT_CODE.match(stock_code) or _NON_NUMERIC_PRODUCTS.match(stock_code))


def to_minor_units(text: str) -> int:
    """'12.5' -> 1250, exactly (no float rounding). Raises ValueError on anything else."""
    s = text.strip()
    negative = s.startswith("-")
    if negative or s.startswith("+"):
        s = s[1:]
    if not s or not re.fullmatch(r"\d*(\.\d*)?", s) or s == ".":
        raise ValueError(f"not a price: {text!r}")
    whole, _, frac = s.partition(".")
    frac = (frac + "000")[:3]
    cents = int(whole or "0") * 100 + int(frac[:2])
    if int(frac[2]) >= 5:  # round half up on the third decimal
        cents += 1
    return -cents if negative else cents
