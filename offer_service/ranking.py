"""Ranking: score = relevance x P(accept | surface) x value x price-band factor."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .policy import StoreRules
from .rules import PricedOffer
from .surfaces import SURFACES, Surface

# With value = "margin" and an unknown cost, assume this share of the offer price is margin.
# Conservative on purpose (below a typical 40-50% retail gross margin) so a guessed margin does
# not outrank a known one.
ASSUMED_MARGIN_SHARE = 0.3


def value(offer: PricedOffer, rules: StoreRules) -> float:
    """What an accept is worth to the store, in minor units: the offer price, or the margin
    (known, or ASSUMED_MARGIN_SHARE of the price) when the store ranks by margin. Never negative."""
    if rules.value == "margin":
        if offer.margin is not None:
            return float(max(offer.margin, 0))
        return offer.offer_price * ASSUMED_MARGIN_SHARE
    return float(offer.offer_price)


def score(
    offer: PricedOffer, surface: Surface, rules: StoreRules, p_accept: float | None = None
) -> float:
    """Expected value of showing the offer. `p_accept` overrides the surface's prior P(accept):
    the seam for learned (Beta-Bernoulli / Thompson-sampled) acceptance rates."""
    p = SURFACES[surface].accept_prior if p_accept is None else p_accept
    return offer.candidate.relevance * p * value(offer, rules) * offer.band_factor


def rank(
    offers: Sequence[PricedOffer],
    surface: Surface,
    rules: StoreRules,
    p_accept: Mapping[str, float] | None = None,
) -> list[PricedOffer]:
    """Best score first; ties by higher relevance, then lower product id. `p_accept` maps
    product id to a learned P(accept) that replaces the surface prior for that product."""
    learned = p_accept or {}

    def key(o: PricedOffer) -> tuple[float, float, str]:
        pid = o.candidate.product.id
        return (-score(o, surface, rules, learned.get(pid)), -o.candidate.relevance, pid)

    return sorted(offers, key=key)
