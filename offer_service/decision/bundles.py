"""Bundles ("frequently bought together"): the viewed product and its strongest complements."""

from __future__ import annotations

import math
from collections.abc import Sequence

from offer_service.decision.candidates import Candidate
from offer_service.decision.rules import (
    PricedItem,
    PricedOffer,
    discount_cap,
    eligible,
    family_key,
    fits_price,
    keeps_margin,
    offer_price,
)
from offer_service.domain.policy import BUNDLE_DISCOUNT_MAX, BUNDLE_DISCOUNT_MIN, StoreRules
from offer_service.domain.products import Product
from offer_service.domain.surfaces import Surface

# A bundle holds the viewed product and at most this many complements.
BUNDLE_COMPLEMENTS = 2
BUNDLE_REASON = "Frequently bought together"
# The candidates that mean "bought together": the merchant's complements and learned
# co-purchases (the lists cross-sells use). A category's best seller or an upgrade is none.
_TOGETHER = frozenset(("complement", "affinity"))

# A bundle's discount and each product's share of its price.
Priced = tuple[int, list[int]]


def bundles(
    anchor: Product, candidates: Sequence[Candidate], rules: StoreRules
) -> list[PricedOffer]:
    """The bundle offers of `anchor`'s page, in the order a visitor is offered them (at most
    one per answer: `decide.finish`): the product with its strongest complements (`candidates`
    come best first) that pass every static rule as bundle items, then, when there are two, the
    product with each of them alone (for a visitor who owns or declined the other). Empty when
    bundles are off, the product cannot be bundled, or no complement qualifies."""
    if not rules.bundles or not _bundleable(anchor):
        return []
    picked: list[Candidate] = []
    priced: list[Priced] = []  # each: the product with the complements picked so far
    groups = {family_key(anchor)}  # one product per family, and none of the viewed one's
    for c in candidates:
        p = c.product
        if c.kind != "cross_sell" or c.source not in _TOGETHER or p.id == anchor.id:
            continue
        if not _bundleable(p) or p.currency != anchor.currency or family_key(p) in groups:
            continue
        found = price_bundle((anchor, *(x.product for x in picked), p), rules)
        if found is None:
            continue
        picked.append(c)
        priced.append(found)
        groups.add(family_key(p))
        if len(picked) == BUNDLE_COMPLEMENTS:
            break
    if not picked:
        return []
    offers = [_offer(anchor, picked, priced[-1])]
    if len(picked) > 1:
        offers.append(_offer(anchor, picked[:1], priced[0]))
        alone = price_bundle((anchor, picked[1].product), rules)
        if alone is not None:
            offers.append(_offer(anchor, picked[1:], alone))
    return offers


def place(ranked: Sequence[PricedOffer], offers: Sequence[PricedOffer]) -> list[PricedOffer]:
    """`ranked` with the bundle `offers` just ahead of the best ranked of their complements.

    A bundle is its strongest complement's offer made bigger: the shopper who would take that
    complement is the one who takes the bundle, so the bundle takes its place in the ranking
    (its complements then are not shown again on their own: `decide.finish`). With none of its
    complements in the list, it comes last."""
    if not offers:
        return list(ranked)
    held = {i.product.id for o in offers for i in o.items[1:]}
    at = next((n for n, o in enumerate(ranked) if o.candidate.product.id in held), len(ranked))
    return [*ranked[:at], *offers, *ranked[at:]]


def price_bundle(products: Sequence[Product], rules: StoreRules) -> Priced | None:
    """The bundle's discount and each product's share of its price, or None when no discount
    from the store's `discounts.bundle` down to BUNDLE_DISCOUNT_MIN keeps every product within
    its discount cap, above the margin floor and (its complements) within the page's price fit.
    """
    cap = min(
        BUNDLE_DISCOUNT_MAX, rules.discounts.bundle, *(discount_cap(p, rules) for p in products)
    )
    if cap < BUNDLE_DISCOUNT_MIN:
        return None
    prices = [p.price for p in products]
    total = sum(prices)
    fit = products[0].price
    # A deeper discount lowers every share: the price fit is likeliest at `cap`, the margin
    # floor at BUNDLE_DISCOUNT_MIN. When either fails there, no discount between passes.
    if not _fits(split(offer_price(total, cap), prices), fit, rules):
        return None
    for pct in range(cap, BUNDLE_DISCOUNT_MIN - 1, -1):
        shares = split(offer_price(total, pct), prices)
        if not _fits(shares, fit, rules):
            return None
        if all(keeps_margin(p, s, rules) for p, s in zip(products, shares, strict=True)):
            return pct, shares
    return None


def _fits(shares: Sequence[int], anchor_price: int, rules: StoreRules) -> bool:
    """Whether every complement's share fits the product page's price fit."""
    return all(fits_price(s, anchor_price, Surface.PRODUCT_PAGE, rules) for s in shares[1:])


def split(total: int, prices: Sequence[int]) -> list[int]:
    """`total` shared in proportion to `prices`, in whole minor units that add up to it exactly
    (largest remainders get the leftover units; ties go to the earlier product)."""
    whole = sum(prices)
    if whole <= 0:
        return [total] + [0] * (len(prices) - 1)
    exact = [total * p for p in prices]
    shares = [e // whole for e in exact]
    by_remainder = sorted(range(len(prices)), key=lambda i: (-(exact[i] % whole), i))
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    return shares


def _bundleable(p: Product) -> bool:
    # Offerable, and not on sale: a bundle's discount would come on top of a markdown.
    return eligible(p, ()) and not p.on_sale


def _offer(anchor: Product, complements: Sequence[Candidate], priced: Priced) -> PricedOffer:
    products = (anchor, *(c.product for c in complements))
    pct, shares = priced
    # The chance the shopper wants every complement, if each is wanted independently.
    relevance = math.prod(c.relevance for c in complements)
    candidate = Candidate(anchor, "bundle", relevance, BUNDLE_REASON, "bundle")
    costs = [p.cost for p in products]
    margin = None
    if all(c is not None for c in costs):
        margin = sum(shares) - sum(c for c in costs if c is not None)
    items = tuple(PricedItem(p, s) for p, s in zip(products, shares, strict=True))
    return PricedOffer(candidate, pct, sum(shares), margin, 1.0, items=items)
