"""Candidate offers for an anchor: merchandising, learned affinity, cold start, replenishment."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from offer_service.decision.affinity import combine as combine_affinity
from offer_service.decision.affinity import relevance as pair_relevance
from offer_service.decision.affinity import sum_scores
from offer_service.decision.rules import eligible, family_key
from offer_service.domain.products import Product
from offer_service.domain.records import PairCount
from offer_service.domain.surfaces import SURFACES, Surface
from offer_service.types import DAY_MS, OfferKind

CandidateSource = Literal[
    "complement", "ladder", "affinity", "cold_start", "replenish", "downsell", "bundle"
]

# A merchant's explicit `complements` are a deliberate pairing: trusted almost as much as the
# strongest learned affinity, so they lead unless the data says something very clearly.
COMPLEMENT_RELEVANCE = 0.9
# The next tier up a family ladder; each further step multiplies by LADDER_DECAY, so the next
# tier is preferred and a jump of two tiers needs twice the value to win.
LADDER_RELEVANCE = 0.8
LADDER_DECAY = 0.5
# Cold start scores a same-category best seller by its basket share P(B), which is what the
# confidence of any pair would be without information (lift 1), scaled down below learned
# pairs; below the floor it is noise, and fewer offers beat unrelated ones.
COLD_START_SCALE = 0.5
COLD_START_FLOOR = 0.01
# A consumable bought in the order and now due: the customer already chose it once.
REPLENISH_RELEVANCE = 0.8
# After a decline, the one cheaper sibling of the product the shopper was interested in.
DOWNSELL_RELEVANCE = 0.7

# When one product comes from several sources with equal relevance, the earlier one here wins.
_SOURCE_PRIORITY: dict[CandidateSource, int] = {
    "complement": 0,
    "ladder": 1,
    "affinity": 2,
    "replenish": 3,
    "cold_start": 4,
    "downsell": 5,
    "bundle": 6,
}


@dataclass(frozen=True, slots=True)
class Candidate:
    """A product worth offering for an anchor, before any business rule or price."""

    product: Product
    kind: OfferKind
    relevance: float  # (0, 1]
    reason: str  # shopper-facing
    source: CandidateSource
    # Upsells: ids of family members with a tier >= this one's; an owner of any is not upsold.
    ladder_above: frozenset[str] = frozenset()
    # Replenish: when the consumable runs out (epoch ms).
    due_at_ms: int | None = None


@dataclass(frozen=True, slots=True)
class CandidateInputs:
    """Everything candidate generation reads, fetched by the caller beforehand."""

    surface: Surface
    anchors: tuple[Product, ...]  # viewed product / cart items / the order's products
    products: Mapping[str, Product]  # every product referenced below, anchors included
    neighbors: Mapping[str, Sequence[PairCount]]  # precomputed top-K per anchor id
    basket_counts: Mapping[str, int]  # count(A) for anchors and neighbours
    basket_total: int  # N
    family_members: Mapping[str, Sequence[Product]]  # per family of an anchor
    category_best_sellers: Mapping[str, Sequence[tuple[str, int]]]  # per anchor category
    order_total: int | None = None  # post-purchase surfaces: order value, minor units
    order_placed_at_ms: int | None = None  # for replenish due dates
    min_pair_count: int = 2
    # Cart and checkout: the lines' quantities times their prices, against the free-shipping
    # threshold (the price fit's `decide.anchors_subtotal` counts each product once).
    cart_subtotal: int | None = None


def generate(inputs: CandidateInputs) -> list[Candidate]:
    """Candidates of the kinds the surface allows, one per product, best relevance first
    (ties: source priority, then product id). Never an anchor, except for replenishment."""
    kinds = SURFACES[inputs.surface].kinds
    anchor_ids = frozenset(a.id for a in inputs.anchors)
    best: dict[str, Candidate] = {}

    def add(c: Candidate) -> None:
        if c.kind not in kinds or c.relevance <= 0:
            return
        if c.source != "replenish" and c.product.id in anchor_ids:
            return
        held = best.get(c.product.id)
        if held is None or _sort_key(c) < _sort_key(held):
            best[c.product.id] = c

    if "cross_sell" in kinds:
        for c in _complements(inputs, anchor_ids):
            add(c)
        for c in _affinity(inputs, anchor_ids):
            add(c)
    if "upsell" in kinds:
        for c in _ladder(inputs):
            add(c)
    if "replenish" in kinds:
        for c in _replenish(inputs):
            add(c)
    if "cross_sell" in kinds:
        # Cold start only fills a list that could not fill the surface: count what a response
        # could show (offerable products, one per family), not raw candidates.
        groups = _offerable_groups(best.values(), anchor_ids)
        for c in _cold_start(inputs, anchor_ids, best, groups):
            add(c)
    return sorted(best.values(), key=_sort_key)


def downsell(declined: Product, family_members: Sequence[Product]) -> Candidate | None:
    """After a decline: the family member closest below the declined product's price (never a
    higher tier; ties by higher tier, then id), or None. Never the declined product itself."""
    if declined.family is None:
        return None
    options = [
        p
        for p in family_members
        if p.family == declined.family
        and p.price < declined.price
        and eligible(p, (declined.id,))
        and not (p.tier is not None and declined.tier is not None and p.tier > declined.tier)
    ]
    if not options:
        return None
    choice = min(options, key=lambda p: (-p.price, -(p.tier or 0), p.id))
    return Candidate(choice, "downsell", DOWNSELL_RELEVANCE, f"Try {choice.title}", "downsell")


def _sort_key(c: Candidate) -> tuple[float, int, str]:
    return (-c.relevance, _SOURCE_PRIORITY[c.source], c.product.id)


def _complements(inputs: CandidateInputs, anchor_ids: frozenset[str]) -> list[Candidate]:
    out: list[Candidate] = []
    for anchor in inputs.anchors:
        for pid in anchor.complements:
            p = inputs.products.get(pid)
            if p is not None and pid not in anchor_ids:
                reason = f"Goes well with {anchor.title}"
                out.append(Candidate(p, "cross_sell", COMPLEMENT_RELEVANCE, reason, "complement"))
    return out


def _ladder(inputs: CandidateInputs) -> list[Candidate]:
    # Per family, the ladder starts above the highest tier already anchored: a cart holding
    # tiers 1 and 3 is not offered tier 2.
    top: dict[str, int] = {}
    for a in inputs.anchors:
        if a.family is not None and a.tier is not None:
            top[a.family] = max(top.get(a.family, a.tier), a.tier)
    out: list[Candidate] = []
    for family, anchor_tier in sorted(top.items()):
        members = [
            m
            for m in inputs.family_members.get(family, ())
            if m.family == family and m.tier is not None
        ]
        steps = sorted({m.tier for m in members if m.tier is not None and m.tier > anchor_tier})
        for m in members:
            if m.tier is None or m.tier <= anchor_tier:
                continue
            relevance = LADDER_RELEVANCE * LADDER_DECAY ** steps.index(m.tier)
            above = frozenset(o.id for o in members if o.tier is not None and o.tier >= m.tier)
            out.append(Candidate(m, "upsell", relevance, f"Upgrade to {m.title}", "ladder", above))
    return out


def _affinity(inputs: CandidateInputs, anchor_ids: frozenset[str]) -> list[Candidate]:
    per_anchor: dict[str, dict[str, float]] = {}
    # The anchor that contributes most to each candidate (the first anchor on a tie), tracked
    # while scoring: searching every anchor afterwards costs candidates x anchors, which a large
    # cart (hundreds of lines, thousands of candidates) turns into most of the work.
    strongest: dict[str, tuple[float, str]] = {}
    products, basket_counts, n = inputs.products, inputs.basket_counts, inputs.basket_total
    learned = False  # any anchor's list trained by the item model
    for anchor in inputs.anchors:
        anchor_count = basket_counts.get(anchor.id, 0)
        scores: dict[str, float] = {}
        for pc in inputs.neighbors.get(anchor.id, ()):
            pid = pc.product_id
            if pid in anchor_ids or pid not in products:
                continue
            if pc.score is not None:
                # The model chose its neighbours from every basket; its score is the weight,
                # negative when the anchor makes the product less likely: it still counts in
                # the cart's sum.
                learned = True
                r = pc.score
                if r < 0:
                    scores[pid] = r
                    continue
            elif pc.pair_count < inputs.min_pair_count:
                continue
            else:
                r = pair_relevance(pc.pair_count, anchor_count, basket_counts.get(pid, 0), n)
            if r > 0:
                scores[pid] = r
                held = strongest.get(pid)
                if held is None or r > held[0]:
                    strongest[pid] = (r, anchor.id)
        if scores:
            per_anchor[anchor.id] = scores
    if not per_anchor:
        return []
    # The item model is linear: a cart's score is the sum of its items' rows, an estimate of the
    # probability the product is in the basket. Co-occurrence relevances combine by the capped
    # noisy-OR; a list not yet trained (a product new since the last fit) adds its relevance to
    # the model's sum, both being probabilities of the partner given the anchor.
    if learned:
        # 1 - exp(-s) keeps the order of the sums (a large cart's exceed 1) inside (0, 1), and
        # is s itself for the small sums most candidates have.
        combined = {pid: -math.expm1(-s) for pid, s in sum_scores(per_anchor).items()}
    else:
        combined = combine_affinity(per_anchor)
    titles = {a.id: a.title for a in inputs.anchors}
    out: list[Candidate] = []
    for pid, relevance in combined.items():
        if relevance <= 0:
            continue
        reason = f"Frequently bought with {titles[strongest[pid][1]]}"
        out.append(Candidate(products[pid], "cross_sell", min(relevance, 1.0), reason, "affinity"))
    return out


def _replenish(inputs: CandidateInputs) -> list[Candidate]:
    placed = inputs.order_placed_at_ms
    if placed is None:
        return []
    return [
        Candidate(
            a,
            "replenish",
            REPLENISH_RELEVANCE,
            f"Time to restock {a.title}",
            "replenish",
            due_at_ms=placed + a.replenish_days * DAY_MS,
        )
        for a in inputs.anchors
        if "consumable" in a.flags and a.replenish_days is not None
    ]


def _offerable_groups(
    candidates: Iterable[Candidate], anchor_ids: frozenset[str]
) -> set[tuple[str, str]]:
    """The families (diversity groups) that offerable candidates span."""
    return {
        family_key(c.product)
        for c in candidates
        if eligible(c.product, () if c.kind == "replenish" else anchor_ids)
    }


def _cold_start(
    inputs: CandidateInputs,
    anchor_ids: frozenset[str],
    held: Mapping[str, Candidate],
    groups: set[tuple[str, str]],
) -> list[Candidate]:
    """Same-category best sellers filling a list short of the surface's hard max, one per new
    family, up to the shortfall. Anchors without a category get none (never unrelated
    categories); the anchors' own families are left to the ladder."""
    shortfall = SURFACES[inputs.surface].hard_max - len(groups)
    if shortfall <= 0 or inputs.basket_total <= 0:
        return []
    anchor_families = {a.family for a in inputs.anchors if a.family is not None}
    groups = set(groups)
    pool: dict[str, Candidate] = {}
    for category in sorted({a.category for a in inputs.anchors if a.category}):
        for pid, baskets in inputs.category_best_sellers.get(category, ()):
            p = inputs.products.get(pid)
            if p is None or p.category != category or pid in anchor_ids or pid in held:
                continue
            if p.family is not None and p.family in anchor_families:
                continue
            if not eligible(p, anchor_ids):
                continue
            relevance = COLD_START_SCALE * baskets / inputs.basket_total
            if relevance < COLD_START_FLOOR:
                continue
            c = Candidate(
                p, "cross_sell", min(relevance, 1.0), f"Popular in {category}", "cold_start"
            )
            if pid not in pool or _sort_key(c) < _sort_key(pool[pid]):
                pool[pid] = c
    out: list[Candidate] = []
    for c in sorted(pool.values(), key=_sort_key):
        key = family_key(c.product)
        if key in groups:
            continue
        groups.add(key)
        out.append(c)
        if len(out) >= shortfall:
            break
    return out
