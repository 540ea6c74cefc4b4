"""The free-shipping threshold: offers that close a cart's gap rank first among relevant ones."""

from __future__ import annotations

from typing import Any

from offer_service.decision.candidates import CandidateInputs
from offer_service.decision.decide import decide, prepare
from offer_service.decision.shipping import FREE_SHIPPING_REASON, shortfall
from offer_service.domain.policy import StoreRules
from offer_service.domain.products import Product
from offer_service.domain.records import EMPTY_VISITOR, PairCount
from offer_service.domain.surfaces import Surface

NOW = 1_700_000_000_000
COFFEE = Product("coffee", "Coffee", 1200, category="coffee")
FILTERS = Product("filters", "Filters", 600, category="gear")
MUG = Product("mug", "Mug set", 1800, category="gear")
PRESS = Product("press", "French press", 3500, category="gear")
# Not bought with coffee: never in the cart's candidates, whatever it would add.
TENT = Product("tent", "Tent", 9900, category="camping")
CATALOG = {p.id: p for p in (COFFEE, FILTERS, MUG, PRESS, TENT)}
# Filters are bought with coffee most often, then the mug, then the press.
NEIGHBORS = {
    "coffee": [
        PairCount("filters", 50, 0.5),
        PairCount("mug", 30, 0.3),
        PairCount("press", 10, 0.1),
    ]
}


def cart(surface: Surface = Surface.CART, **kw: Any) -> CandidateInputs:
    return CandidateInputs(
        surface=surface,
        anchors=(COFFEE,),
        products=CATALOG,
        neighbors=NEIGHBORS,
        basket_counts={},
        basket_total=1000,
        family_members={},
        category_best_sellers={"coffee": [("tent", 900)]},
        **kw,
    )


def ids_and_reasons(inputs: CandidateInputs, rules: StoreRules) -> list[tuple[str, str]]:
    """The prepared list, every relevant offer in its order (a cart shows its first two)."""
    return [(o.candidate.product.id, o.candidate.reason) for o in prepare(inputs, rules)]


def test_what_remains_to_the_threshold() -> None:
    assert shortfall(5000, 1200) == 3800
    assert shortfall(5000, 4999) == 1
    assert shortfall(5000, 5000) is None
    assert shortfall(5000, 7000) is None
    assert shortfall(None, 1200) is None


def test_without_a_threshold_offers_rank_by_relevance() -> None:
    ranked = [pid for pid, _ in ids_and_reasons(cart(cart_subtotal=1200), StoreRules())]
    assert ranked[:2] == ["filters", "mug"]


def test_offers_that_close_the_gap_rank_first_and_say_so() -> None:
    # A $30 threshold and a $12 cart: $18 remains. The mug ($16.20 at 10% off) does not close
    # it; the press ($31.50) does, and leads though it is the least related.
    rules = StoreRules(free_shipping_threshold=3000)
    offers = ids_and_reasons(cart(cart_subtotal=1200), rules)
    assert offers[0] == ("press", FREE_SHIPPING_REASON)
    assert [pid for pid, _ in offers[1:3]] == ["filters", "mug"]
    assert all(reason != FREE_SHIPPING_REASON for _, reason in offers[1:])
    # The checkout's one slot goes to the offer that closes the gap.
    checkout = cart(Surface.CHECKOUT, cart_subtotal=1200)
    (offer,) = decide(checkout, rules, EMPTY_VISITOR, limit=1, now_ms=NOW)
    assert (offer.candidate.product.id, offer.candidate.reason) == ("press", FREE_SHIPPING_REASON)


def test_several_closers_keep_their_relevance_order() -> None:
    # $6 remains: the mug and the press close it, the filters ($5.40) do not.
    rules = StoreRules(free_shipping_threshold=1800)
    offers = ids_and_reasons(cart(cart_subtotal=1200), rules)
    assert [pid for pid, _ in offers[:3]] == ["mug", "press", "filters"]
    assert [reason == FREE_SHIPPING_REASON for _, reason in offers[:3]] == [True, True, False]


def test_at_or_above_the_threshold_nothing_changes() -> None:
    plain = ids_and_reasons(cart(cart_subtotal=3000), StoreRules())
    for subtotal in (3000, 4500):
        rules = StoreRules(free_shipping_threshold=3000)
        assert ids_and_reasons(cart(cart_subtotal=subtotal), rules) == plain


def test_an_unrelated_product_is_never_offered_to_close_the_gap() -> None:
    # Only the tent would close a $90 gap, and nothing relates it to coffee.
    rules = StoreRules(free_shipping_threshold=10_000)
    offers = prepare(cart(cart_subtotal=1000), rules)
    assert "tent" not in {o.candidate.product.id for o in offers}
    assert all(o.candidate.reason != FREE_SHIPPING_REASON for o in offers)


def test_the_product_page_has_no_free_shipping_ranking() -> None:
    page = CandidateInputs(
        surface=Surface.PRODUCT_PAGE, anchors=(COFFEE,), products=CATALOG, neighbors=NEIGHBORS,
        basket_counts={}, basket_total=1000, family_members={}, category_best_sellers={},
        cart_subtotal=1200,
    )  # fmt: skip
    rules = StoreRules(free_shipping_threshold=3000, bundles=False)
    assert all(o.candidate.reason != FREE_SHIPPING_REASON for o in prepare(page, rules))
