"""Small shared vocabulary: ids, money and timestamps."""

from __future__ import annotations

import time
from typing import Literal, TypedDict

StoreId = str
ProductId = str
OrderId = str

OfferKind = Literal["upsell", "cross_sell", "downsell", "replenish", "bundle"]
OFFER_KINDS: tuple[OfferKind, ...] = ("upsell", "cross_sell", "downsell", "replenish", "bundle")

ProductFlag = Literal["new", "clearance", "consumable", "fee"]
PRODUCT_FLAGS: tuple[ProductFlag, ...] = ("new", "clearance", "consumable", "fee")


class MoneyDict(TypedDict):
    """Money on the wire: integer minor units and an ISO 4217 currency code."""

    amount: int
    currency: str


def money(amount: int, currency: str) -> MoneyDict:
    return {"amount": amount, "currency": currency}


def is_whole(text: str) -> bool:
    """Only the ASCII digits 0-9: what `int()` can read as a count, an id or epoch ms.
    (`str.isdigit` also takes "²" and "①", on which `int()` fails.)"""
    return text.isascii() and text.isdecimal()


# int() refuses text of more than 4,300 digits (a ValueError); no count, id or epoch time this
# service reads has more than 19 (an int64 has 19).
_MOST_DIGITS = 19
WHOLE_MAX = 10**_MOST_DIGITS - 1


def whole_in(text: str, low: int = 0, high: int = WHOLE_MAX) -> int | None:
    """`text` as a whole number from `low` to `high` (at most WHOLE_MAX) when it is one in
    ASCII digits, leading zeros allowed; None otherwise, however long the text."""
    if not is_whole(text):
        return None
    if len(text) > _MOST_DIGITS:
        text = text.lstrip("0") or "0"
        if len(text) > _MOST_DIGITS:
            return None
    n = int(text)
    return n if low <= n <= high else None


def now_ms() -> int:
    """Wall-clock time as integer epoch milliseconds (the unit every stored timestamp uses)."""
    return time.time_ns() // 1_000_000


DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MINUTE_MS = 60_000
