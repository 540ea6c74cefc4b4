"""The six storefront surfaces, their hard limits and the offer kinds each allows."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from offer_service.types import OfferKind


class Surface(StrEnum):
    PRODUCT_PAGE = "product_page"
    CART = "cart"
    CHECKOUT = "checkout"
    THANK_YOU = "thank_you"
    EMAIL = "email"
    SMS = "sms"


@dataclass(frozen=True, slots=True)
class SurfaceSpec:
    """What a surface may show. `hard_max` is never exceeded, whatever a store's rules say."""

    default_count: int
    hard_max: int
    kinds: tuple[OfferKind, ...]
    # Prior P(accept) before any learning (DESIGN section 5).
    accept_prior: float
    # Anchored on an order the shopper already paid for: needs order_id and its order_token.
    post_purchase: bool
    # Anchor: "product" (product_id), "items" (cart lines) or "order" (order_id).
    anchor: str


SURFACES: dict[Surface, SurfaceSpec] = {
    Surface.PRODUCT_PAGE: SurfaceSpec(
        4, 5, ("upsell", "cross_sell", "bundle"), 0.10, False, "product"
    ),
    Surface.CART: SurfaceSpec(2, 2, ("cross_sell", "upsell"), 0.08, False, "items"),
    Surface.CHECKOUT: SurfaceSpec(1, 1, ("cross_sell",), 0.06, False, "items"),
    Surface.THANK_YOU: SurfaceSpec(1, 2, ("cross_sell", "upsell", "downsell"), 0.05, True, "order"),
    Surface.EMAIL: SurfaceSpec(3, 5, ("cross_sell", "replenish"), 0.04, True, "order"),
    Surface.SMS: SurfaceSpec(1, 1, ("cross_sell", "replenish"), 0.03, True, "order"),
}


def spec(surface: Surface) -> SurfaceSpec:
    return SURFACES[surface]


def clamp_limit(surface: Surface, requested: int | None, store_count: int | None = None) -> int:
    """The number of offers to return: the request's limit (or the store's, or the default),
    never above the surface's hard max. Callers reject `requested < 1` before this."""
    s = SURFACES[surface]
    wanted = requested if requested is not None else (store_count or s.default_count)
    return max(1, min(wanted, s.hard_max))
