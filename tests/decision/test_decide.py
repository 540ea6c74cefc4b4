from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

from offer_service.decision import rules as static_rules
from offer_service.decision.candidates import CandidateInputs, generate
from offer_service.decision.decide import (
    PREPARED_MAX,
    PREPARED_PER_FAMILY,
    anchors_subtotal,
    arrange,
    decide,
    finish,
    prepare,
)
from offer_service.decision.rules import PricedOffer
from offer_service.domain.policy import StoreRules
from offer_service.domain.products import Product
from offer_service.domain.records import EMPTY_VISITOR, PairCount, VisitorState
from offer_service.domain.surfaces import Surface
from offer_service.types import DAY_MS, ProductFlag

# Value weighed in full (expected value): the ranking these hand-computed orders follow. The
# lists here are of single offers; bundles have their own tests (test_bundles.py).
RULES = StoreRules(value_weight=1.0, bundles=False)
NOW = 1_700_000_000_000


def product(pid: str, title: str, price: int, **kw: Any) -> Product:
    return Product(id=pid, title=title, price=price, **kw)


X100 = product(
    "cam-x100", "Camera X100", 49900, category="cameras", family="camera-x", tier=1,
    complements=("sd-128", "cap-52"),
)  # fmt: skip
X200 = product("cam-x200", "Camera X200 Pro", 79900, category="cameras", family="camera-x", tier=2)
X300 = product("cam-x300", "Camera X300 Max", 119900, category="cameras", family="camera-x", tier=3)
SD = product("sd-128", "128 GB SD card", 2999, category="memory")
CAP = product("cap-52", "Lens cap", 999, category="accessories")
SERUM = product(
    "serum", "Vitamin C serum", 4000, category="skincare", flags=("consumable",), replenish_days=45
)
CATALOG = {p.id: p for p in (X100, X200, X300, SD, CAP, SERUM)}


def inputs(surface: Surface, *anchors: Product, **kw: Any) -> CandidateInputs:
    products = {**CATALOG, **{a.id: a for a in anchors}}
    families = {
        f: [p for p in products.values() if p.family == f] for f in {a.family for a in anchors} if f
    }
    return CandidateInputs(
        surface=surface,
        anchors=anchors,
        products=products,
        neighbors={},
        basket_counts={},
        basket_total=0,
        family_members=families,
        category_best_sellers={},
        **kw,
    )


def ids(offers: list[PricedOffer]) -> list[str]:
    return [o.candidate.product.id for o in offers]


def picked(prepared: list[PricedOffer], indices: list[int]) -> list[str]:
    return [prepared[i].candidate.product.id for i in indices]


def test_prepare_prices_and_ranks_every_candidate() -> None:
    prepared = prepare(inputs(Surface.PRODUCT_PAGE, X100), RULES)
    # score = relevance x 0.10 x offer price: X200 0.8 x 79900, X300 0.4 x 119900,
    # SD 0.9 x 2699, cap 0.9 x 899.
    assert [(o.candidate.product.id, o.discount_pct, o.offer_price) for o in prepared] == [
        ("cam-x200", 0, 79900),
        ("cam-x300", 0, 119900),
        ("sd-128", 10, 2699),
        ("cap-52", 10, 899),
    ]


def test_finish_shows_one_product_per_family_in_rank_order() -> None:
    prepared = prepare(inputs(Surface.PRODUCT_PAGE, X100), RULES)
    chosen = finish(
        prepared, EMPTY_VISITOR, RULES, limit=4, surface=Surface.PRODUCT_PAGE, now_ms=NOW
    )
    assert chosen == [0, 2, 3]
    assert picked(prepared, chosen) == ["cam-x200", "sd-128", "cap-52"]


def test_finish_respects_exclude() -> None:
    prepared = prepare(inputs(Surface.PRODUCT_PAGE, X100), RULES)
    chosen = finish(
        prepared,
        EMPTY_VISITOR,
        RULES,
        limit=4,
        surface=Surface.PRODUCT_PAGE,
        exclude={"cam-x200", "cap-52"},
        now_ms=NOW,
    )
    assert picked(prepared, chosen) == ["cam-x300", "sd-128"]


def test_finish_never_returns_more_than_the_hard_max_whatever_the_limit() -> None:
    extras = [
        product(f"acc-{i}", f"Accessory {i}", 1000 + i, category="accessories") for i in range(8)
    ]
    hub = product("hub", "Hub", 9900, category="hubs", complements=tuple(p.id for p in extras))
    i = inputs(Surface.PRODUCT_PAGE, hub)
    i = replace(i, products={**i.products, **{p.id: p for p in extras}})
    prepared = prepare(i, RULES)
    assert len(prepared) == 8
    for surface, hard_max in ((Surface.PRODUCT_PAGE, 5), (Surface.CART, 2), (Surface.CHECKOUT, 1)):
        chosen = finish(prepared, EMPTY_VISITOR, RULES, limit=50, surface=surface, now_ms=NOW)
        assert len(chosen) == hard_max
    assert finish(
        prepared, EMPTY_VISITOR, RULES, limit=3, surface=Surface.PRODUCT_PAGE, now_ms=NOW
    ) == [
        0,
        1,
        2,
    ]


def test_an_owner_of_a_higher_tier_gets_no_upsell_but_an_owner_of_a_lower_one_does() -> None:
    i = inputs(Surface.PRODUCT_PAGE, X100)
    owns_x300 = VisitorState(purchased={"cam-x300": NOW - DAY_MS})
    assert ids(decide(i, RULES, owns_x300, limit=5, now_ms=NOW)) == ["sd-128", "cap-52"]
    owns_x200 = VisitorState(purchased={"cam-x200": NOW - DAY_MS})
    assert ids(decide(i, RULES, owns_x200, limit=5, now_ms=NOW)) == ["cam-x300", "sd-128", "cap-52"]


def test_visitor_filters_apply_per_request() -> None:
    i = inputs(Surface.PRODUCT_PAGE, X100)
    visitor = VisitorState(
        declined=frozenset({"cam-x200"}),
        purchased={"sd-128": NOW - DAY_MS},
        impressions={"cam-x300": 3},
    )
    assert ids(decide(i, RULES, visitor, limit=5, now_ms=NOW)) == ["cap-52"]


def test_a_returned_order_gets_no_offers() -> None:
    i = inputs(Surface.THANK_YOU, X100, order_total=49900)
    assert decide(i, RULES, EMPTY_VISITOR, limit=2, now_ms=NOW, order_status="delivered") != []
    assert decide(i, RULES, EMPTY_VISITOR, limit=2, now_ms=NOW, order_status="returned") == []


def test_thank_you_excludes_offers_dearer_than_the_order_and_penalises_outside_the_band() -> None:
    i = inputs(Surface.THANK_YOU, X100, order_total=49900)
    offers = decide(i, RULES, EMPTY_VISITOR, limit=5, now_ms=NOW)
    # Both upgrades cost more than the whole order; the accessories are far below 15% of it.
    assert [(o.candidate.product.id, o.band_factor) for o in offers] == [
        ("sd-128", 0.5),
        ("cap-52", 0.5),
    ]


def test_checkout_shows_a_single_cross_sell() -> None:
    offers = decide(inputs(Surface.CHECKOUT, X100), RULES, EMPTY_VISITOR, limit=3, now_ms=NOW)
    assert [(o.candidate.product.id, o.candidate.kind) for o in offers] == [
        ("sd-128", "cross_sell")
    ]


def test_email_replenishes_a_consumable_from_the_order_only_once_due() -> None:
    placed = NOW - 10 * DAY_MS
    i = inputs(Surface.EMAIL, SERUM, order_total=4000, order_placed_at_ms=placed)
    visitor = VisitorState(purchased={"serum": placed})
    assert decide(i, RULES, visitor, limit=3, now_ms=NOW) == []
    due = placed + 45 * DAY_MS
    offers = decide(i, RULES, visitor, limit=3, now_ms=due)
    assert [(o.candidate.kind, o.discount_pct, o.offer_price) for o in offers] == [
        ("replenish", 5, 3800)
    ]


def test_prepare_keeps_a_bounded_list_with_few_spares_per_family() -> None:
    tiers = [
        product(f"cam-t{t}", f"Camera T{t}", 10000 * t, category="cameras", family="cam-t", tier=t)
        for t in range(1, 8)
    ]
    extras = [product(f"acc-{n:02}", f"Accessory {n}", 1000, category="acc") for n in range(30)]
    anchor = product(
        "cam-t1", "Camera T1", 10000, category="cameras", family="cam-t", tier=1,
        complements=tuple(p.id for p in extras),
    )  # fmt: skip
    i = CandidateInputs(
        surface=Surface.PRODUCT_PAGE,
        anchors=(anchor,),
        products={p.id: p for p in [*tiers, *extras, anchor]},
        neighbors={},
        basket_counts={},
        basket_total=0,
        family_members={"cam-t": tiers},
        category_best_sellers={},
    )
    prepared = prepare(i, RULES)
    assert len(prepared) == PREPARED_MAX == 20
    assert sum(o.candidate.product.family == "cam-t" for o in prepared) == PREPARED_PER_FAMILY == 3


def test_prepare_prices_only_contenders_and_keeps_exactly_the_full_ranking() -> None:
    # prepare prices candidates best bound first and stops once no later one can reach the list;
    # the kept list must be the one pricing every candidate gives, whatever the catalog.
    rng = random.Random(5)
    flags: list[tuple[ProductFlag, ...]] = [(), ("new",), ("clearance",), ()]
    for trial in range(40):
        surface = rng.choice([Surface.CART, Surface.PRODUCT_PAGE, Surface.THANK_YOU])
        anchor = product("anchor", "Anchor", 5000, category="c", family="anchor-fam")
        extras = []
        for n in range(rng.randrange(1, 120)):
            amount = rng.choice([rng.randrange(100, 20000), 1000])  # ties on purpose
            cost = rng.choice([None, rng.randrange(0, amount + 1)])
            extras.append(
                product(
                    f"p{n:03}", f"P{n}", amount, cost=cost, flags=rng.choice(flags),
                    family=rng.choice([None, "f1", "f2", "f3"]),
                    compare_at_price=rng.choice([None, amount + 500]),
                )
            )  # fmt: skip
        products = {p.id: p for p in [anchor, *extras]}
        pairs = [PairCount(p.id, rng.randrange(2, 40)) for p in extras]
        # Partners bought at most 5x as often as with the anchor: lift > 1, all relevant.
        counts = {pc.product_id: rng.randrange(pc.pair_count, 5 * pc.pair_count) for pc in pairs}
        neighbors, counts["anchor"] = {"anchor": pairs}, 300
        i = CandidateInputs(
            surface=surface, anchors=(anchor,), products=products, neighbors=neighbors,
            basket_counts=counts, basket_total=2000, family_members={}, category_best_sellers={},
            order_total=30000 if surface == Surface.THANK_YOU else None,
        )  # fmt: skip
        rules = StoreRules(
            value=rng.choice(["price", "margin"]), margin_floor=rng.choice([0, 300]), bundles=False
        )
        candidates = generate(i)
        everything = static_rules.price(
            candidates, surface, {"anchor"}, i.order_total, rules, subtotal=anchors_subtotal(i)
        )
        assert prepare(i, rules) == arrange(everything, surface, rules), trial


def test_a_wholesale_cart_is_offered_what_most_of_it_points_to_not_the_priciest_link() -> None:
    # 100 items in the cart, every one bought with "broad", a fifth of them with the pricier
    # "narrow" (the same pair strength each time). Combined by a plain noisy-OR both would score
    # a relevance near 1 and the price alone would rank narrow first; the cart counts as two
    # independent anchors (affinity.combine), so being backed by the whole cart wins.
    cart = [product(f"item{n:03}", f"Item {n}", 500) for n in range(100)]
    broad, narrow = product("broad", "Broad", 1000), product("narrow", "Narrow", 3000)
    neighbors = {
        a.id: [PairCount("broad", 30), *([PairCount("narrow", 30)] if n < 20 else [])]
        for n, a in enumerate(cart)
    }
    i = CandidateInputs(
        surface=Surface.CART, anchors=tuple(cart),
        products={p.id: p for p in [*cart, broad, narrow]}, neighbors=neighbors,
        basket_counts={**{a.id: 100 for a in cart}, "broad": 100, "narrow": 100},
        basket_total=1000, family_members={}, category_best_sellers={},
    )  # fmt: skip
    prepared = prepare(i, RULES)
    assert ids(prepared) == ["broad", "narrow"]
    broad_relevance, narrow_relevance = (o.candidate.relevance for o in prepared)
    assert broad_relevance == pytest.approx(0.343, abs=1e-3)  # 1 - (1 - 0.19)^2
    assert narrow_relevance == pytest.approx(0.081, abs=1e-3)  # 1 - (1 - 0.19)^(20 x 2/100)
