"""Ranking: score = relevance x P(accept | surface) x value ** value_weight x price-band factor."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from offer_service.decision.learning import Learned
from offer_service.decision.rules import PricedOffer
from offer_service.domain.policy import StoreRules
from offer_service.domain.surfaces import SURFACES, Surface

# The exploration slot considers only this many under-explored offers, best first by posterior
# mean: trying the tail of a long candidate list teaches little and costs a draw each.
EXPLORE_POOL = 50
# ...and flags this many of them, so a visitor who owns or declined one still gets another.
EXPLORERS = 3

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
    """Expected value of showing the offer, its value weighed by the store's `value_weight` (1:
    the expected value itself, 0: the chance of an accept alone). `p_accept` overrides the
    surface's prior P(accept): the seam for learned (Beta-Bernoulli / Thompson-sampled)
    acceptance rates."""
    p = SURFACES[surface].accept_prior if p_accept is None else p_accept
    weighed: float = value(offer, rules) ** rules.value_weight
    return offer.candidate.relevance * p * weighed * offer.band_factor


def rank(
    offers: Sequence[PricedOffer],
    surface: Surface,
    rules: StoreRules,
    p_accept: Mapping[str, float] | None = None,
) -> list[PricedOffer]:
    """Best score first; ties by higher relevance, then higher value (what breaks them when
    value is weighed at 0), then lower product id. `p_accept` maps product id to a learned
    P(accept) that replaces the surface prior for that product."""
    learned = p_accept or {}

    def key(o: PricedOffer) -> tuple[float, float, float, str]:
        pid = o.candidate.product.id
        s = score(o, surface, rules, learned.get(pid))
        return (-s, -o.candidate.relevance, -value(o, rules), pid)

    return sorted(offers, key=key)


def sampled_p_accept(
    offers: Sequence[PricedOffer], surface: Surface, learned: Learned, rng: random.Random
) -> dict[str, float]:
    """P(accept) for one ranking: a Thompson draw for each offer with enough evidence, the
    posterior mean for an under-explored one; offers without evidence are left to the prior.

    Under-explored offers are not drawn: their wide posteriors would let every new offer win
    top slots by luck (flooding); they are tried through the bounded exploration slot instead.
    Draws go in product-id order, so a seeded `rng` reproduces the ranking.
    """
    out: dict[str, float] = {}
    drawn: list[str] = []
    for o in offers:
        pid = o.candidate.product.id
        if (surface.value, pid) not in learned.evidence:
            continue
        if learned.explored(surface, pid):
            drawn.append(pid)
        else:
            out[pid] = learned.posterior(surface, pid).mean
    for pid in sorted(drawn):
        out[pid] = learned.posterior(surface, pid).draw(rng)
    return out


def explorers(
    ranked: Sequence[PricedOffer],
    surface: Surface,
    rules: StoreRules,
    learned: Learned,
    rng: random.Random,
    n: int = EXPLORERS,
) -> list[PricedOffer]:
    """The under-explored offers to try in the exploration slot: among the first EXPLORE_POOL
    under-explored offers of `ranked`, the `n` with the best Thompson-sampled score (relevance
    and value still count: exploring an unrelated or worthless offer teaches nothing useful)."""
    pool = [o for o in ranked if not learned.explored(surface, o.candidate.product.id)]
    pool = pool[:EXPLORE_POOL]
    sampled = []
    for o in sorted(pool, key=lambda o: o.candidate.product.id):
        p = learned.posterior(surface, o.candidate.product.id).draw(rng)
        sampled.append((-score(o, surface, rules, p), o.candidate.product.id, o))
    sampled.sort(key=lambda s: (s[0], s[1]))
    return [o for _, _, o in sampled[:n]]
