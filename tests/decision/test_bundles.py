"""Bundles on the product page: the viewed product and its strongest complements, 5-15% off."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from offer_service.decision.bundles import BUNDLE_REASON, bundles, split
from offer_service.decision.candidates import CandidateInputs, generate
from offer_service.decision.decide import decide, finish, prepare
from offer_service.decision.rules import PricedOffer
from offer_service.domain.policy import StoreRules
from offer_service.domain.products import Product
from offer_service.domain.records import EMPTY_VISITOR, PairCount, VisitorState, bundle_signal
from offer_service.domain.surfaces import Surface

RULES = StoreRules()
NOW = 1_700_000_000_000


def product(pid: str, price: int, **kw: Any) -> Product:
    return Product(id=pid, title=pid.replace("-", " ").title(), price=price, **kw)


CAMERA = product("camera", 49900, cost=31000, category="cameras", family="camera", tier=1)
SD = product("sd-128", 2999, cost=1100, category="memory", family="sd", tier=2)
SD_SMALL = product("sd-64", 1999, cost=700, category="memory", family="sd", tier=1)
BATTERY = product("battery", 3499, cost=1400, category="accessories")
CAP = product("cap", 999, cost=200, category="accessories")
CATALOG = {p.id: p for p in (CAMERA, SD, SD_SMALL, BATTERY, CAP)}
# The camera's co-purchases, strongest first by the item model's score.
NEIGHBORS = [PairCount("sd-128", 60, 0.5), PairCount("battery", 40, 0.3), PairCount("cap", 20, 0.1)]


def page(*, catalog: dict[str, Product] | None = None, **kw: Any) -> CandidateInputs:
    products = {**CATALOG, **(catalog or {})}
    return CandidateInputs(
        surface=kw.pop("surface", Surface.PRODUCT_PAGE),
        anchors=(products["camera"],),
        products=products,
        neighbors={"camera": kw.pop("neighbors", NEIGHBORS)},
        basket_counts={},
        basket_total=1000,
        family_members={},
        category_best_sellers={},
        **kw,
    )


def the_bundle(offers: list[PricedOffer]) -> PricedOffer:
    (bundle,) = [o for o in offers if o.candidate.kind == "bundle"]
    return bundle


def items(offer: PricedOffer) -> list[tuple[str, int]]:
    return [(i.product.id, i.offer_price) for i in offer.items]


def shown(inputs: CandidateInputs, rules: StoreRules = RULES, **kw: Any) -> list[PricedOffer]:
    return decide(
        inputs, rules, kw.pop("visitor", EMPTY_VISITOR), limit=kw.pop("limit", 5), now_ms=NOW, **kw
    )


def test_the_bundle_is_the_viewed_product_and_its_two_strongest_complements_10_pct_off() -> None:
    bundle = the_bundle(shown(page()))
    assert bundle.candidate.product == CAMERA
    assert bundle.candidate.reason == BUNDLE_REASON
    assert [i.product.id for i in bundle.items] == ["camera", "sd-128", "battery"]
    total = 49900 + 2999 + 3499
    assert bundle.list_price == total
    assert bundle.discount_pct == 10
    assert bundle.offer_price == (total * 90 + 50) // 100 == 50758
    # Each item's share follows its price and the shares add up to the bundle's price exactly.
    assert items(bundle) == [("camera", 44910), ("sd-128", 2699), ("battery", 3149)]
    assert sum(price for _, price in items(bundle)) == bundle.offer_price


def test_the_discount_follows_the_rules_within_each_items_cap() -> None:
    deep = StoreRules(discounts={"bundle": 15, "default_cap": 15})
    assert the_bundle(shown(page(), deep)).discount_pct == 15
    # The default cap of an ordinary product (10) still holds, whatever the bundle asks.
    assert the_bundle(shown(page(), StoreRules(discounts={"bundle": 15}))).discount_pct == 10
    assert the_bundle(shown(page(), StoreRules(discounts={"bundle": 5}))).discount_pct == 5


def test_shares_are_whole_minor_units_that_add_up_exactly() -> None:
    assert split(100, [1, 1, 1]) == [34, 33, 33]
    assert split(9001, [5000, 3000, 1999]) == [4501, 2701, 1799]
    for total in range(0, 500, 7):
        assert sum(split(total, [333, 777, 1])) == total


def test_each_item_keeps_the_margin_floor_or_the_discount_shrinks() -> None:
    # The battery's share at 10% off leaves 3149 - 2700 = 449 over its cost; a floor of 500
    # needs the discount lowered to 8% (3219 - 2700 = 519).
    tight = {"battery": replace(BATTERY, cost=2700)}
    bundle = the_bundle(shown(page(catalog=tight), StoreRules(margin_floor=500)))
    assert bundle.discount_pct == 8
    for item in bundle.items:
        assert item.product.cost is not None
        assert item.offer_price - item.product.cost >= 500


def test_a_complement_that_would_break_the_floor_at_5_pct_is_left_out() -> None:
    # At 5% off, the battery's share is 3324: below its cost plus the floor. The next
    # complement takes its place.
    costly = {"battery": replace(BATTERY, cost=3400)}
    bundle = the_bundle(shown(page(catalog=costly), StoreRules(margin_floor=100)))
    assert [i.product.id for i in bundle.items] == ["camera", "sd-128", "cap"]


def test_out_of_stock_inactive_or_on_sale_complements_are_left_out() -> None:
    gone = {
        "sd-128": replace(SD, inventory=0),
        "battery": replace(BATTERY, active=False),
    }
    assert [i.product.id for i in the_bundle(shown(page(catalog=gone))).items] == ["camera", "cap"]
    sale = {"sd-128": replace(SD, compare_at_price=3999)}
    assert [i.product.id for i in the_bundle(shown(page(catalog=sale))).items] == [
        "camera",
        "battery",
        "cap",
    ]


def test_one_product_per_family_in_a_bundle() -> None:
    neighbors = [PairCount("sd-128", 60, 0.5), PairCount("sd-64", 50, 0.4), NEIGHBORS[1]]
    bundle = the_bundle(shown(page(neighbors=neighbors)))
    assert [i.product.id for i in bundle.items] == ["camera", "sd-128", "battery"]


def test_no_bundle_when_no_complement_qualifies() -> None:
    nothing = {p.id: replace(p, inventory=0) for p in (SD, BATTERY, CAP)}
    assert not any(o.items for o in prepare(page(catalog=nothing), RULES))
    # A best seller of the category is not "bought together".
    assert not bundles(CAMERA, generate(page(neighbors=[])), RULES)
    # Nor is a product page whose own product cannot be sold.
    assert not bundles(replace(CAMERA, inventory=0), generate(page()), RULES)


def test_bundles_can_be_switched_off() -> None:
    assert not any(o.items for o in prepare(page(), StoreRules(bundles=False)))


def test_bundles_are_only_offered_on_the_product_page() -> None:
    for surface in (Surface.CART, Surface.CHECKOUT):
        assert not any(o.items for o in prepare(page(surface=surface), RULES))


def test_a_bundle_takes_its_strongest_complements_place_and_counts_as_one_offer() -> None:
    offers = shown(page(), limit=2)
    assert len(offers) == 2
    assert offers[0].candidate.kind == "bundle"
    # Its complements are not offered again beside it; the next offer is the cap.
    assert [o.candidate.product.id for o in shown(page())] == ["camera", "cap"]


def test_at_most_one_bundle_per_answer() -> None:
    prepared = prepare(page(), RULES)
    # The full bundle and, for a visitor who owns one of its complements, each alone with it.
    assert [[i.product.id for i in o.items] for o in prepared if o.items] == [
        ["camera", "sd-128", "battery"],
        ["camera", "sd-128"],
        ["camera", "battery"],
    ]
    chosen = finish(
        prepared, EMPTY_VISITOR, RULES, limit=5, surface=Surface.PRODUCT_PAGE, now_ms=NOW
    )
    assert sum(1 for i in chosen if prepared[i].items) == 1


def test_a_complement_the_visitor_bought_is_left_out_of_their_bundle() -> None:
    owner = VisitorState(purchased={"sd-128": NOW - 1000})
    offers = shown(page(), visitor=owner)
    assert [i.product.id for i in the_bundle(offers).items] == ["camera", "battery"]
    assert "sd-128" not in {o.candidate.product.id for o in offers}
    declined = VisitorState(declined=frozenset({"battery"}))
    assert [i.product.id for i in the_bundle(shown(page(), visitor=declined)).items] == [
        "camera",
        "sd-128",
    ]


def test_without_a_bundle_its_complements_are_offered_on_their_own() -> None:
    # A visitor who declined the bundle gets none, and its complements come back as
    # cross-sells; so does one who declined the viewed product itself.
    for declined_id in (bundle_signal("camera"), "camera"):
        declined = VisitorState(declined=frozenset({declined_id}))
        offers = shown(page(), visitor=declined)
        assert not any(o.items for o in offers)
        assert [o.candidate.product.id for o in offers] == ["sd-128", "battery", "cap"]
    both = VisitorState(purchased={"sd-128": NOW, "battery": NOW})
    assert not any(o.items for o in shown(page(), visitor=both))
    # Excluding a bundle's product leaves out the bundles that hold it.
    excluded = shown(page(), exclude={"sd-128"})
    assert [i.product.id for i in the_bundle(excluded).items] == ["camera", "battery"]


@pytest.mark.parametrize(
    "ratio,expected",
    [(20.0, ["camera", "sd-128", "battery"]), (0.06, ["camera", "sd-128", "cap"])],
)
def test_each_complement_fits_the_pages_price(ratio: float, expected: list[str]) -> None:
    # 6% of the camera's price is 2994: the card's share (2699) fits, the battery's (3149) not.
    rules = StoreRules(price_fit={"product_page": ratio})
    assert [i.product.id for i in the_bundle(shown(page(), rules)).items] == expected
