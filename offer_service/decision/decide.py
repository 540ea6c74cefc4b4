"""The pure decision pipeline: candidates -> rules -> ranking -> offers, in two cacheable stages."""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from dataclasses import replace

from offer_service.decision.bundles import bundles, place
from offer_service.decision.candidates import Candidate, CandidateInputs, generate
from offer_service.decision.learning import Learned
from offer_service.decision.ranking import explorers, rank, sampled_p_accept, score
from offer_service.decision.rules import (
    PricedOffer,
    family_key,
    offer_keys,
    order_suppressed,
    price,
    visitor_allows,
)
from offer_service.decision.shipping import closing_first, shortfall
from offer_service.domain.policy import StoreRules
from offer_service.domain.records import VisitorState
from offer_service.domain.surfaces import SURFACES, Surface

# A prepared list keeps this many offers: enough slack over the largest hard max (5) for
# per-visitor filters, small enough that every request's scan and the per-list token signing
# stay cheap.
PREPARED_MAX = 20
# ...and at most this many per family: a response shows one, the rest are spares for visitors
# who own or declined the first.
PREPARED_PER_FAMILY = 3
# Candidates priced per step of `_price_contenders`: a list's worth and its slack.
_BATCH = 2 * PREPARED_MAX


def prepare(
    inputs: CandidateInputs,
    rules: StoreRules,
    learned: Learned | None = None,
    rng: random.Random | None = None,
) -> list[PricedOffer]:
    """Visitor-independent stage: generate, apply the static rules, rank, trim; on a product
    page, add the bundle offers (`bundles.place`); on cart and checkout below the free-shipping
    threshold, the offers that close the gap first. Cacheable per (store, surface, anchors,
    order total for post-purchase surfaces, cart subtotal under a free-shipping threshold,
    catalog/rules version). With `learned`, P(accept) is learned and Thompson-sampled (see
    `arrange`)."""
    anchor_ids = frozenset(a.id for a in inputs.anchors)
    candidates = generate(inputs)
    if learned is None:
        priced = _price_contenders(candidates, inputs, anchor_ids, rules)
    else:  # the exploration slot looks past the list's end: price everything
        priced = price(
            candidates,
            inputs.surface,
            anchor_ids,
            inputs.order_total,
            rules,
            subtotal=anchors_subtotal(inputs),
        )
    offers = arrange(priced, inputs.surface, rules, learned, rng)
    spec = SURFACES[inputs.surface]
    if spec.anchor == "product" and "bundle" in spec.kinds and inputs.anchors:
        offers = place(offers, bundles(inputs.anchors[0], candidates, rules))
    if spec.anchor == "items":
        gap = shortfall(rules.free_shipping_threshold, inputs.cart_subtotal)
        if gap is not None:
            offers = closing_first(offers, gap)
    return offers


def _price_contenders(
    candidates: Sequence[Candidate],
    inputs: CandidateInputs,
    anchor_ids: frozenset[str],
    rules: StoreRules,
) -> list[PricedOffer]:
    """Priced offers that include every one `arrange` could keep, without pricing them all.

    Candidates are priced in batches, in order of an upper bound of their score (relevance x
    prior x list price: a discount, the margin and the price band only lower it), until the next
    bound falls below the score of the PREPARED_MAX-th offer kept so far: nothing after it can
    reach the list, so the kept list is exactly the one pricing everything gives. A large cart
    has hundreds of candidates and this prices a few dozen.
    """
    surface = inputs.surface
    prior = SURFACES[surface].accept_prior
    w = rules.value_weight
    ordered = sorted(candidates, key=lambda c: -_score_bound(c, prior, w))
    priced: list[PricedOffer] = []
    subtotal = anchors_subtotal(inputs)
    for start in range(0, len(ordered), _BATCH):
        batch = ordered[start : start + _BATCH]
        priced.extend(
            price(batch, surface, anchor_ids, inputs.order_total, rules, subtotal=subtotal)
        )
        if start + _BATCH >= len(ordered):
            break
        kept = _trim(rank(priced, surface, rules))
        if len(kept) >= PREPARED_MAX:
            threshold = score(kept[-1], surface, rules)
            if _score_bound(ordered[start + _BATCH], prior, w) < threshold:
                break
    return priced


def anchors_subtotal(inputs: CandidateInputs) -> int:
    """What the shopper is buying: the cart's products (one each: a cart line's quantity is not
    sent) or the viewed product; the price fit's reference."""
    return sum(a.price for a in inputs.anchors)


def _score_bound(c: Candidate, prior: float, value_weight: float) -> float:
    # Same association as ranking.score, so float rounding keeps bound >= score; a negative cost
    # (never valid, but possible in a hand-built catalog) would let the margin exceed the price.
    p = c.product
    top = p.price if p.cost is None or p.cost >= 0 else p.price - p.cost
    weighed: float = float(max(top, 0)) ** value_weight
    return c.relevance * prior * weighed


def arrange(
    priced: Sequence[PricedOffer],
    surface: Surface,
    rules: StoreRules,
    learned: Learned | None = None,
    rng: random.Random | None = None,
) -> list[PricedOffer]:
    """Rank priced offers and keep the best PREPARED_MAX (PREPARED_PER_FAMILY per family).

    With `learned`, offers with enough evidence rank on a Thompson draw of P(accept) and the
    others on their posterior mean, and up to `ranking.EXPLORERS` under-explored offers come
    flagged `explore` (appended when the trim left them out) for the exploration slot.

    Sampling here, once per prepared list, rather than per request: a list is rebuilt at least
    every minute per key and process (a cart's anchors make most of its keys new), so draws
    still vary often enough to explore (batched Thompson sampling learns nearly as fast), while
    a request only flips one coin for the exploration slot. Drawing for ~20 offers per request
    would cost more than the rest of `finish`.
    """
    if learned is None:
        return _trim(rank(priced, surface, rules))
    rng = rng if rng is not None else random.Random()
    ranked = rank(priced, surface, rules, sampled_p_accept(priced, surface, learned, rng))
    kept = _trim(ranked)
    chosen = explorers(ranked, surface, rules, learned, rng)
    if not chosen:
        return kept
    flagged = {id(o) for o in chosen}
    out = [replace(o, explore=True) if id(o) in flagged else o for o in kept]
    in_list = {id(o) for o in kept}
    out.extend(replace(o, explore=True) for o in chosen if id(o) not in in_list)
    return out


def _trim(ranked: Sequence[PricedOffer]) -> list[PricedOffer]:
    kept: list[PricedOffer] = []
    per_family: dict[tuple[str, str], int] = {}
    for offer in ranked:
        key = family_key(offer.candidate.product)
        if per_family.get(key, 0) >= PREPARED_PER_FAMILY:
            continue
        per_family[key] = per_family.get(key, 0) + 1
        kept.append(offer)
        if len(kept) >= PREPARED_MAX:
            break
    return kept


def finish(
    prepared: Sequence[PricedOffer],
    visitor: VisitorState,
    rules: StoreRules,
    *,
    limit: int,
    surface: Surface,
    exclude: Collection[str] = (),
    now_ms: int,
    explore: bool = False,
) -> list[int]:
    """Per-request stage: indices into `prepared`, in its (rank) order, of the offers this
    visitor may see: not excluded, allowed by the visitor rules, one per family, at most one
    bundle (the first whose every product is allowed), and at most min(limit, the surface's hard
    max), a bundle counting as one. One pass that stops as soon as the response is full.

    `explore` (the caller's coin flip, true for `explore_share` of requests) gives the last slot
    to the first allowed offer flagged `explore` below the others, or else to the next offer as
    usual: under-explored offers get shown, in a bounded share of responses.
    """
    n = min(limit, SURFACES[surface].hard_max)
    chosen: list[int] = []
    if n <= 0:
        return chosen
    take = n - 1 if explore else n
    spare: int | None = None  # the last slot's fallback when no flagged offer is allowed
    # Diversity groups taken: one product per family, one bundle, and a bundle's complements
    # neither beside it on their own nor beside another of their family.
    families: set[tuple[str, str]] = set()
    bundled = False
    for i, offer in enumerate(prepared):
        if offer.items:
            if bundled:
                continue
            keys = offer_keys(offer)
            if not families.isdisjoint(keys):
                continue
            if exclude and any(item.product.id in exclude for item in offer.items):
                continue
        else:
            product = offer.candidate.product
            if product.id in exclude:
                continue
            key = family_key(product)
            if key in families:
                continue
            keys = (key,)
        if len(chosen) >= take:  # only the exploration slot is left
            if spare is not None and not offer.explore:
                continue
            if not visitor_allows(offer, visitor, rules, now_ms):
                continue
            if offer.explore:
                spare = i
                break
            spare = i
            continue
        if not visitor_allows(offer, visitor, rules, now_ms):
            continue
        families.update(keys)
        bundled = bundled or bool(offer.items)
        chosen.append(i)
        if len(chosen) >= n:
            break
    if explore and spare is not None:
        chosen.append(spare)
    return chosen


def decide(
    inputs: CandidateInputs,
    rules: StoreRules,
    visitor: VisitorState,
    *,
    limit: int,
    exclude: Collection[str] = (),
    now_ms: int,
    order_status: str | None = None,
) -> list[PricedOffer]:
    """Both stages at once (tests, offline evaluation). A returned order gets nothing."""
    if order_status is not None and order_suppressed(order_status):
        return []
    prepared = prepare(inputs, rules)
    picked = finish(
        prepared,
        visitor,
        rules,
        limit=limit,
        surface=inputs.surface,
        exclude=exclude,
        now_ms=now_ms,
    )
    return [prepared[i] for i in picked]
