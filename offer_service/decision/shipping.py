"""The free-shipping threshold: what a cart lacks to reach it, and the offers that close it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from offer_service.decision.rules import PricedOffer

FREE_SHIPPING_REASON = "Adds free shipping"


def shortfall(threshold: int | None, subtotal: int | None) -> int | None:
    """What a cart of `subtotal` lacks to ship free: None without a threshold, or at or above
    it."""
    if threshold is None or subtotal is None or subtotal >= threshold:
        return None
    return threshold - subtotal


def closing_first(offers: Sequence[PricedOffer], gap: int) -> list[PricedOffer]:
    """The offers whose offer price closes `gap` first, saying so in their reason, then the
    others; each group keeps its order. Only these offers: a product outside the cart's
    candidates is never brought in to reach the threshold."""
    closing = [
        replace(o, candidate=replace(o.candidate, reason=FREE_SHIPPING_REASON))
        for o in offers
        if o.offer_price >= gap
    ]
    return closing + [o for o in offers if o.offer_price < gap]
