"""Small shared vocabulary: ids, money and timestamps."""

from __future__ import annotations

import time
from typing import Literal, TypedDict

StoreId = str
ProductId = str
OrderId = str

OfferKind = Literal["upsell", "cross_sell", "downsell", "replenish"]
OFFER_KINDS: tuple[OfferKind, ...] = ("upsell", "cross_sell", "downsell", "replenish")

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


def now_ms() -> int:
    """Wall-clock time as integer epoch milliseconds (the unit every stored timestamp uses)."""
    return time.time_ns() // 1_000_000


DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MINUTE_MS = 60_000
