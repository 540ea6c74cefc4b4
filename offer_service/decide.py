"""The pure decision pipeline: candidates -> rules -> ranking -> offers, in two cacheable stages."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from .candidates import CandidateInputs, generate
from .policy import StoreRules
from .ranking import rank
from .rules import PricedOffer, family_key, order_suppressed, price, visitor_allows
from .storage.base import VisitorState
from .surfaces import SURFACES, Surface

# A prepared list keeps this many offers: enough slack over the largest hard max (5) for
# per-visitor filters, small enough that every request's scan and the per-list token signing
# stay cheap.
PREPARED_MAX = 20
# ...and at most this many per family: a response shows one, the rest are spares for visitors
# who own or declined the first.
PREPARED_PER_FAMILY = 3


def prepare(inputs: CandidateInputs, rules: StoreRules) -> list[PricedOffer]:
    """Visitor-independent stage: generate, apply the static rules, rank, trim. Cacheable per
    (store, surface, anchors, order total for post-purchase surfaces, catalog/rules version)."""
    anchor_ids = frozenset(a.id for a in inputs.anchors)
    priced = price(generate(inputs), inputs.surface, anchor_ids, inputs.order_total, rules)
    kept: list[PricedOffer] = []
    per_family: dict[tuple[str, str], int] = {}
    for offer in rank(priced, inputs.surface, rules):
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
) -> list[int]:
    """Per-request stage: indices into `prepared`, in its (rank) order, of the offers this
    visitor may see: not excluded, allowed by the visitor rules, one per family, and at most
    min(limit, the surface's hard max). One pass that stops as soon as the response is full."""
    n = min(limit, SURFACES[surface].hard_max)
    chosen: list[int] = []
    if n <= 0:
        return chosen
    families: set[tuple[str, str]] = set()
    for i, offer in enumerate(prepared):
        product = offer.candidate.product
        if product.id in exclude:
            continue
        key = family_key(product)
        if key in families or not visitor_allows(offer, visitor, rules, now_ms):
            continue
        families.add(key)
        chosen.append(i)
        if len(chosen) >= n:
            break
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
