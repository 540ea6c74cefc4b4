from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import pytest

from offer_service.decision import affinity
from offer_service.decision.candidates import (
    COLD_START_FLOOR,
    COLD_START_SCALE,
    COMPLEMENT_RELEVANCE,
    LADDER_DECAY,
    LADDER_RELEVANCE,
    REPLENISH_RELEVANCE,
    Candidate,
    CandidateInputs,
    downsell,
    generate,
)
from offer_service.domain.products import Product
from offer_service.domain.records import PairCount
from offer_service.domain.surfaces import Surface
from offer_service.types import DAY_MS


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
BAG = product("bag", "Camera bag", 4999, category="bags")
TRIPOD = product("tripod", "Travel tripod", 8999, category="accessories")
STRAP = product("strap", "Neck strap", 1999, category="accessories")
KIT = product("kit", "Cleaning kit", 1499, category="accessories")
PEN = product("pen", "Lens pen", 799, category="accessories")
COMPACT = product("compact", "Compact camera", 19900, category="cameras")
COFFEE = product(
    "coffee-250", "House blend 250 g", 1200, category="coffee", family="house-blend", tier=1,
    flags=("consumable",), replenish_days=30,
)  # fmt: skip
COFFEE_SUB = product(
    "coffee-sub", "House blend subscription", 3000, category="coffee", family="house-blend", tier=2
)
MUG = product("mug", "Mug", 1500, category="kitchen")

CATALOG = {
    p.id: p
    for p in (X100, X200, X300, SD, CAP, BAG, TRIPOD, STRAP, KIT, PEN, COMPACT, COFFEE, COFFEE_SUB)
}
CAMERA_FAMILY = (X100, X200, X300)
PLACED = 1_700_000_000_000


def inputs(
    surface: Surface,
    *anchors: Product,
    neighbors: Mapping[str, Sequence[PairCount]] | None = None,
    counts: Mapping[str, int] | None = None,
    total: int = 1000,
    best_sellers: Mapping[str, Sequence[tuple[str, int]]] | None = None,
    **kw: Any,
) -> CandidateInputs:
    families = {"camera-x": CAMERA_FAMILY, "house-blend": (COFFEE, COFFEE_SUB)}
    return CandidateInputs(
        surface=surface,
        anchors=anchors,
        products={**CATALOG, **{a.id: a for a in anchors}},
        neighbors=neighbors or {},
        basket_counts=counts or {},
        basket_total=total,
        family_members={a.family: families[a.family] for a in anchors if a.family},
        category_best_sellers=best_sellers or {},
        **kw,
    )


def summary(cands: list[Candidate]) -> list[tuple[str, str, str]]:
    return [(c.product.id, c.kind, c.source) for c in cands]


# --- explicit merchandising ---------------------------------------------------------------------


def test_complements_come_first_with_the_merchandising_relevance() -> None:
    counts = {"cam-x100": 100, "bag": 100}
    neighbors = {"cam-x100": [PairCount("bag", 30)]}
    bag_relevance = affinity.relevance(30, 100, 100, 1000)
    assert 0 < bag_relevance < COMPLEMENT_RELEVANCE

    cands = generate(inputs(Surface.CHECKOUT, X100, neighbors=neighbors, counts=counts))

    assert summary(cands) == [
        ("cap-52", "cross_sell", "complement"),
        ("sd-128", "cross_sell", "complement"),
        ("bag", "cross_sell", "affinity"),
    ]
    assert [c.relevance for c in cands[:2]] == [0.9, 0.9]
    assert cands[1].reason == "Goes well with Camera X100"
    assert cands[2].relevance == pytest.approx(bag_relevance)
    assert cands[2].reason == "Frequently bought with Camera X100"


def test_the_family_ladder_offers_higher_tiers_as_upsells_preferring_the_next_one() -> None:
    cands = generate(inputs(Surface.PRODUCT_PAGE, X100))
    upsells = {c.product.id: c for c in cands if c.kind == "upsell"}

    assert set(upsells) == {"cam-x200", "cam-x300"}
    assert upsells["cam-x200"].relevance == LADDER_RELEVANCE == 0.8
    assert upsells["cam-x300"].relevance == pytest.approx(0.8 * LADDER_DECAY) == 0.4
    assert upsells["cam-x200"].reason == "Upgrade to Camera X200 Pro"
    assert upsells["cam-x200"].source == "ladder"
    assert upsells["cam-x200"].ladder_above == {"cam-x200", "cam-x300"}
    assert upsells["cam-x300"].ladder_above == {"cam-x300"}


def test_the_ladder_never_goes_down_nor_offers_the_anchor() -> None:
    cands = generate(inputs(Surface.PRODUCT_PAGE, X200))
    assert [c.product.id for c in cands if c.kind == "upsell"] == ["cam-x300"]
    assert all(c.product.id not in {"cam-x100", "cam-x200"} for c in cands)
    assert not [c for c in generate(inputs(Surface.PRODUCT_PAGE, X300)) if c.kind == "upsell"]


def test_a_cart_holding_two_tiers_climbs_from_the_highest() -> None:
    cands = generate(inputs(Surface.CART, X100, X200))
    assert [(c.product.id, c.relevance) for c in cands if c.kind == "upsell"] == [("cam-x300", 0.8)]


def test_a_subscription_is_the_upsell_of_a_coffee_bag() -> None:
    cands = generate(inputs(Surface.CART, COFFEE))
    assert summary(cands) == [("coffee-sub", "upsell", "ladder")]
    assert cands[0].reason == "Upgrade to House blend subscription"


def test_a_complement_that_is_another_anchor_is_not_offered() -> None:
    cands = generate(inputs(Surface.CART, X100, SD))
    assert "sd-128" not in {c.product.id for c in cands}
    assert "cam-x100" not in {c.product.id for c in cands}


# --- learned affinity ---------------------------------------------------------------------------


def test_affinity_candidates_follow_the_affinity_relevance_and_skip_rare_pairs() -> None:
    counts = {"cap-52": 100, "bag": 100, "tripod": 100, "strap": 50}
    neighbors = {
        "cap-52": [PairCount("tripod", 20), PairCount("bag", 40), PairCount("strap", 1)],
    }
    cands = generate(inputs(Surface.PRODUCT_PAGE, CAP, neighbors=neighbors, counts=counts))

    bag, tripod = affinity.relevance(40, 100, 100, 1000), affinity.relevance(20, 100, 100, 1000)
    assert bag > tripod > 0
    assert [c.product.id for c in cands] == ["bag", "tripod"]
    assert [c.relevance for c in cands] == pytest.approx([bag, tripod])
    # min_pair_count is the caller's: raise it and the 20-basket pair goes too.
    strict = inputs(
        Surface.PRODUCT_PAGE, CAP, neighbors=neighbors, counts=counts, min_pair_count=30
    )
    assert [c.product.id for c in generate(strict)] == ["bag"]


def test_several_anchors_combine_their_affinities() -> None:
    counts = {"cap-52": 100, "tripod": 200, "bag": 100}
    neighbors = {"cap-52": [PairCount("bag", 30)], "tripod": [PairCount("bag", 40)]}
    both = generate(inputs(Surface.CART, CAP, TRIPOD, neighbors=neighbors, counts=counts))

    from_cap = affinity.relevance(30, 100, 100, 1000)
    from_tripod = affinity.relevance(40, 200, 100, 1000)
    combined = affinity.combine({"cap-52": {"bag": from_cap}, "tripod": {"bag": from_tripod}})
    assert [(c.product.id, c.source) for c in both] == [("bag", "affinity")]
    assert both[0].relevance == pytest.approx(combined["bag"])
    assert both[0].relevance > max(from_cap, from_tripod)
    assert both[0].reason == "Frequently bought with Lens cap"  # the stronger anchor


def test_a_product_from_several_sources_keeps_its_best_relevance() -> None:
    counts = {"cam-x100": 100, "sd-128": 100}
    neighbors = {"cam-x100": [PairCount("sd-128", 60)]}
    cands = generate(inputs(Surface.CHECKOUT, X100, neighbors=neighbors, counts=counts))
    sd = [c for c in cands if c.product.id == "sd-128"]
    assert len(sd) == 1
    best = max(COMPLEMENT_RELEVANCE, affinity.relevance(60, 100, 100, 1000))
    assert sd[0].relevance == pytest.approx(best)


# --- cold start ---------------------------------------------------------------------------------

ACCESSORY_SELLERS = {
    "accessories": [("strap", 300), ("kit", 150), ("bag", 120), ("pen", 10)],
    "cameras": [("compact", 400)],
}


def test_cold_start_fills_a_short_list_with_same_category_best_sellers_above_the_floor() -> None:
    cands = generate(inputs(Surface.PRODUCT_PAGE, TRIPOD, best_sellers=ACCESSORY_SELLERS))

    # strap 0.5 * 300/1000, kit 0.5 * 150/1000; bag is filed under accessories by the list but
    # is a "bags" product (never another category); pen 0.005 is below the floor.
    assert COLD_START_SCALE == 0.5 and COLD_START_FLOOR == 0.01
    assert [(c.product.id, c.source) for c in cands] == [
        ("strap", "cold_start"),
        ("kit", "cold_start"),
    ]
    assert [c.relevance for c in cands] == pytest.approx([0.15, 0.075])
    assert cands[0].reason == "Popular in accessories"


def test_cold_start_only_when_merchandising_and_affinity_leave_the_surface_short() -> None:
    # Checkout shows one offer: the complements fill it, so no best seller is added.
    sellers = {"cameras": [("compact", 400)]}
    cands = generate(inputs(Surface.CHECKOUT, X100, best_sellers=sellers))
    assert [c.source for c in cands] == ["complement", "complement"]
    # Cart (hard max 2) with one complement: one best seller fills the gap, and only one.
    cap = product("cap-52", "Lens cap", 999, category="accessories", complements=("tripod",))
    cands = generate(inputs(Surface.CART, cap, best_sellers=ACCESSORY_SELLERS))
    assert [(c.product.id, c.source) for c in cands] == [
        ("tripod", "complement"),
        ("strap", "cold_start"),
    ]


def test_an_anchor_without_a_category_gets_no_cold_start() -> None:
    gadget = product("gadget", "Gadget", 5000)
    sellers = {"": [("strap", 300)], **ACCESSORY_SELLERS}
    assert generate(inputs(Surface.PRODUCT_PAGE, gadget, best_sellers=sellers)) == []


def test_cold_start_never_offers_the_anchors_family_nor_out_of_stock_products() -> None:
    x100_alone = product("cam-x100", "Camera X100", 49900, category="cameras", family="camera-x")
    sellers = {"cameras": [("cam-x200", 500), ("compact", 400)]}
    cands = generate(inputs(Surface.CHECKOUT, x100_alone, best_sellers=sellers))
    assert [c.product.id for c in cands] == ["compact"]

    sold_out = {**CATALOG, "compact": product("compact", "Compact", 19900, inventory=0)}
    base = inputs(Surface.CHECKOUT, x100_alone, best_sellers=sellers)
    assert generate(replace(base, products=sold_out)) == []


# --- kinds per surface --------------------------------------------------------------------------


def test_checkout_offers_cross_sells_only() -> None:
    cands = generate(inputs(Surface.CHECKOUT, X100))
    assert {c.kind for c in cands} == {"cross_sell"}
    assert {c.product.id for c in cands} == {"sd-128", "cap-52"}


def test_post_purchase_email_offers_no_upsell_but_replenishes_the_orders_consumables() -> None:
    cands = generate(
        inputs(Surface.EMAIL, COFFEE, X100, order_total=51100, order_placed_at_ms=PLACED)
    )
    assert "upsell" not in {c.kind for c in cands}
    restock = [c for c in cands if c.kind == "replenish"]
    assert [(c.product.id, c.relevance, c.due_at_ms) for c in restock] == [
        ("coffee-250", REPLENISH_RELEVANCE, PLACED + 30 * DAY_MS)
    ]
    assert restock[0].reason == "Time to restock House blend 250 g"
    # SMS too; the product page never replenishes.
    sms = generate(inputs(Surface.SMS, COFFEE, order_placed_at_ms=PLACED))
    assert [c.kind for c in sms] == ["replenish"]
    assert [c.kind for c in generate(inputs(Surface.PRODUCT_PAGE, COFFEE))] == ["upsell"]


def test_thank_you_allows_upsells_and_cross_sells() -> None:
    cands = generate(inputs(Surface.THANK_YOU, X100, order_total=49900))
    assert {c.kind for c in cands} == {"cross_sell", "upsell"}


# --- downsell -----------------------------------------------------------------------------------


def test_downsell_offers_the_closest_cheaper_product_of_the_family() -> None:
    c = downsell(X300, CAMERA_FAMILY)
    assert c is not None
    assert (c.product.id, c.kind, c.source, c.reason) == (
        "cam-x200",
        "downsell",
        "downsell",
        "Try Camera X200 Pro",
    )
    low = downsell(X200, CAMERA_FAMILY)
    assert low is not None and low.product.id == "cam-x100"


def test_downsell_is_never_the_declined_product_nor_a_dearer_or_unavailable_one() -> None:
    assert downsell(X100, CAMERA_FAMILY) is None
    retired = product("cam-x200", "Camera X200 Pro", 79900, family="camera-x", tier=2, active=False)
    c = downsell(X300, (X100, retired, X300))
    assert c is not None and c.product.id == "cam-x100"
    assert downsell(BAG, (BAG,)) is None


# --- the item model's lists -----------------------------------------------------------------


def test_a_cart_sums_the_model_scores_of_its_items() -> None:
    # The model is linear: a candidate's score is the sum of the cart items' weights of it,
    # read as a probability by 1 - exp(-s), which keeps the order of the sums.
    neighbors = {
        "sd-128": [PairCount("bag", 3, 0.2), PairCount("tripod", 9, 0.3)],
        "cap-52": [PairCount("bag", 1, 0.25), PairCount("strap", 0, 0.05)],
    }
    cands = generate(inputs(Surface.CART, SD, CAP, neighbors=neighbors, min_pair_count=2))
    got = {c.product.id: c.relevance for c in cands if c.source == "affinity"}
    assert list(got) == ["bag", "tripod", "strap"]
    assert got["bag"] == pytest.approx(1 - math.exp(-0.45))
    assert got["tripod"] == pytest.approx(1 - math.exp(-0.3))
    # The model chose its neighbours itself: min_pair_count governs co-occurrence lists only.
    assert got["strap"] == pytest.approx(1 - math.exp(-0.05))


def test_a_negative_model_weight_lowers_the_cart_sum() -> None:
    neighbors = {
        "sd-128": [PairCount("bag", 3, 0.2), PairCount("tripod", 9, 0.15)],
        "cap-52": [PairCount("tripod", 2, 0.1), PairCount("bag", 0, -0.12)],
    }
    cands = generate(inputs(Surface.CART, SD, CAP, neighbors=neighbors))
    got = {c.product.id: c.relevance for c in cands if c.source == "affinity"}
    assert list(got) == ["tripod", "bag"]
    assert got["bag"] == pytest.approx(1 - math.exp(-(0.2 - 0.12)))
    # A product only weighed down is no candidate.
    only_down = {"sd-128": [PairCount("bag", 0, -0.3)]}
    assert not [c for c in generate(inputs(Surface.CART, SD, neighbors=only_down))
                if c.source == "affinity"]  # fmt: skip


def test_a_cart_with_one_untrained_item_adds_its_co_occurrence_relevance() -> None:
    counts = {"sd-128": 100, "cap-52": 100, "bag": 100}
    neighbors = {"sd-128": [PairCount("bag", 3, 0.2)], "cap-52": [PairCount("bag", 30)]}
    cands = generate(
        inputs(Surface.CART, SD, CAP, neighbors=neighbors, counts=counts, min_pair_count=2)
    )
    (bag,) = [c for c in cands if c.source == "affinity"]
    learned = affinity.relevance(30, 100, 100, 1000)
    assert bag.relevance == pytest.approx(1 - math.exp(-(0.2 + learned)))
