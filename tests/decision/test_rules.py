from __future__ import annotations

from typing import Any

from offer_service.decision.candidates import Candidate
from offer_service.decision.rules import (
    PricedOffer,
    apply_margin_floor,
    discount_for,
    diversify,
    eligible,
    offer_price,
    order_suppressed,
    price,
    price_band_factor,
    visitor_allows,
)
from offer_service.domain.policy import DiscountRules, FrequencyCap, PriceBand, StoreRules
from offer_service.domain.products import Product
from offer_service.domain.records import VisitorState
from offer_service.domain.surfaces import Surface
from offer_service.types import DAY_MS

RULES = StoreRules()
NOW = 1_700_000_000_000


def product(pid: str, price: int = 1000, **kw: Any) -> Product:
    return Product(id=pid, title=pid.title(), price=price, **kw)


def offer(
    p: Product,
    kind: Any = "cross_sell",
    *,
    ladder_above: frozenset[str] = frozenset(),
    due_at_ms: int | None = None,
) -> PricedOffer:
    c = Candidate(p, kind, 0.5, "why", "complement", ladder_above, due_at_ms)
    return PricedOffer(c, 0, p.price, None, 1.0)


SD = product("sd-128", 2999, cost=1200, category="memory")
SERUM = product("serum", 4000, flags=("consumable",), replenish_days=30)


# --- eligibility --------------------------------------------------------------------------------


def test_an_inactive_product_is_never_offered() -> None:
    assert eligible(SD, ())
    assert not eligible(product("old", active=False), ())


def test_out_of_stock_is_never_offered_but_untracked_inventory_passes() -> None:
    assert not eligible(product("gone", inventory=0), ())
    assert eligible(product("few", inventory=3), ())
    assert eligible(product("untracked", inventory=None), ())


def test_a_fee_line_is_never_offered() -> None:
    assert not eligible(product("shipping", flags=("fee",)), ())


def test_a_product_already_in_the_cart_or_order_is_never_offered() -> None:
    assert not eligible(SD, {"cam-x100", "sd-128"})
    assert eligible(SD, {"cam-x100"})


def test_a_returned_order_suppresses_all_its_offers() -> None:
    assert order_suppressed("returned")
    for status in ("placed", "shipped", "delivered"):
        assert not order_suppressed(status)


# --- per-visitor rules --------------------------------------------------------------------------


def test_a_product_bought_before_is_never_offered_again() -> None:
    visitor = VisitorState(purchased={"sd-128": NOW - 90 * DAY_MS})
    assert visitor_allows(offer(SD), VisitorState(), RULES, NOW)
    assert not visitor_allows(offer(SD), visitor, RULES, NOW)


def test_a_consumable_bought_before_is_offered_again_once_due_for_replenishment() -> None:
    placed = NOW - 31 * DAY_MS
    visitor = VisitorState(purchased={"serum": placed})
    due = offer(SERUM, "replenish", due_at_ms=placed + 30 * DAY_MS)
    assert visitor_allows(due, visitor, RULES, NOW)
    assert visitor_allows(due, visitor, RULES, placed + 30 * DAY_MS)
    assert not visitor_allows(due, visitor, RULES, placed + 30 * DAY_MS - 1)
    # As a plain cross-sell, the same purchase still excludes it.
    assert not visitor_allows(offer(SERUM), visitor, RULES, NOW)


def test_a_later_purchase_of_the_consumable_pushes_replenishment_back() -> None:
    placed = NOW - 31 * DAY_MS
    rebought = NOW - 5 * DAY_MS
    replenish = offer(SERUM, "replenish", due_at_ms=placed + 30 * DAY_MS)
    visitor = VisitorState(purchased={"serum": rebought})
    assert not visitor_allows(replenish, visitor, RULES, NOW)
    assert visitor_allows(replenish, visitor, RULES, rebought + 30 * DAY_MS)


def test_a_declined_product_is_never_offered_again() -> None:
    assert not visitor_allows(offer(SD), VisitorState(declined=frozenset({"sd-128"})), RULES, NOW)


def test_a_returned_product_is_never_offered_again() -> None:
    visitor = VisitorState(returned=frozenset({"serum"}))
    assert not visitor_allows(offer(SD), VisitorState(returned=frozenset({"sd-128"})), RULES, NOW)
    due = offer(SERUM, "replenish", due_at_ms=NOW - DAY_MS)
    assert not visitor_allows(due, visitor, RULES, NOW)


def test_an_accepted_product_is_never_offered_again_except_to_replenish_when_due() -> None:
    visitor = VisitorState(accepted=frozenset({"sd-128", "serum"}))
    assert not visitor_allows(offer(SD), visitor, RULES, NOW)
    assert not visitor_allows(offer(SERUM), visitor, RULES, NOW)
    assert visitor_allows(offer(SERUM, "replenish", due_at_ms=NOW - 1), visitor, RULES, NOW)


def test_an_upsell_is_never_offered_to_an_owner_of_that_tier_or_higher() -> None:
    x200 = product("cam-x200", 79900, family="camera-x", tier=2)
    upsell = offer(x200, "upsell", ladder_above=frozenset({"cam-x200", "cam-x300"}))
    assert visitor_allows(upsell, VisitorState(purchased={"cam-x100": NOW}), RULES, NOW)
    assert not visitor_allows(upsell, VisitorState(purchased={"cam-x300": NOW}), RULES, NOW)


def test_frequency_cap_rests_a_product_shown_too_often_without_a_click() -> None:
    rules = StoreRules(frequency_cap=FrequencyCap(impressions=3))
    assert visitor_allows(offer(SD), VisitorState(impressions={"sd-128": 2}), rules, NOW)
    assert not visitor_allows(offer(SD), VisitorState(impressions={"sd-128": 3}), rules, NOW)
    assert visitor_allows(offer(SD), VisitorState(impressions={"other": 9}), rules, NOW)


# --- margin floor -------------------------------------------------------------------------------


def test_margin_floor_reduces_the_discount_to_hold_it() -> None:
    p = product("lens", 10000, cost=8500)
    rules = StoreRules(margin_floor=600)
    # 10% -> 9000 - 8500 = 500 < 600; 9% -> 9100 - 8500 = 600.
    assert apply_margin_floor(p, 10, rules) == 9
    assert apply_margin_floor(p, 10, StoreRules(margin_floor=500)) == 10


def test_margin_floor_excludes_an_offer_that_cannot_hold_it_even_at_full_price() -> None:
    p = product("lens", 10000, cost=9800)
    assert apply_margin_floor(p, 10, StoreRules(margin_floor=600)) is None
    assert apply_margin_floor(p, 10, StoreRules(margin_floor=200)) == 0


def test_margin_floor_passes_a_product_with_unknown_cost() -> None:
    assert apply_margin_floor(product("lens", 10000), 10, StoreRules(margin_floor=10**6)) == 10


# --- discount calibration -----------------------------------------------------------------------


def test_default_discount_per_kind() -> None:
    assert discount_for("upsell", SD, RULES) == 0
    assert discount_for("cross_sell", SD, RULES) == 10
    assert discount_for("downsell", SD, RULES) == 10
    assert discount_for("replenish", SD, RULES) == 5


def test_new_products_get_the_new_bonus_up_to_the_new_cap() -> None:
    new = product("new-lens", flags=("new",))
    assert discount_for("cross_sell", new, RULES) == 15
    assert discount_for("replenish", new, RULES) == 10
    # The bonus deepens an existing discount only: an upsell stays at face value.
    assert discount_for("upsell", new, RULES) == 0


def test_only_clearance_goes_above_the_new_cap() -> None:
    clearance = product("old-lens", flags=("clearance",))
    assert discount_for("cross_sell", clearance, RULES) == 30
    assert discount_for("replenish", clearance, RULES) == 25


def test_an_ordinary_product_never_exceeds_the_default_cap() -> None:
    rules = StoreRules(discounts=DiscountRules(cross_sell=25, default_cap=10))
    assert discount_for("cross_sell", SD, rules) == 10


def test_no_rule_can_exceed_the_absolute_discount_cap() -> None:
    greedy = DiscountRules.model_construct(
        upsell=60,
        cross_sell=80,
        downsell=50,
        replenish=40,
        default_cap=90,
        new_cap=95,
        clearance_cap=100,
        new_bonus=50,
        clearance_bonus=70,
    )
    rules = StoreRules(discounts=greedy)
    assert rules.discounts.cross_sell == 80  # the invalid rules really are in force
    for p in (SD, product("n", flags=("new",)), product("c", flags=("clearance",))):
        for kind in ("upsell", "cross_sell", "downsell", "replenish"):
            assert discount_for(kind, p, rules) == 30


def test_no_discount_on_a_product_already_on_sale() -> None:
    on_sale = product("sale-bag", 4000, compare_at_price=5000, flags=("clearance",))
    assert discount_for("cross_sell", on_sale, RULES) == 0
    # compare_at_price not above the price is not a sale.
    assert discount_for("cross_sell", product("bag", 4000, compare_at_price=4000), RULES) == 10


def test_offer_price_rounds_half_up_to_a_minor_unit() -> None:
    assert offer_price(2999, 10) == 2699  # 2699.1
    assert offer_price(2995, 10) == 2696  # 2695.5
    assert offer_price(999, 0) == 999


# --- post-purchase price band -------------------------------------------------------------------


def test_thank_you_price_band_inside_penalised_outside_excluded_above_the_order() -> None:
    rules = StoreRules(price_band=PriceBand(low=0.15, high=0.30, outside_penalty=0.5))
    ty = Surface.THANK_YOU
    assert price_band_factor(2000, 10000, ty, rules) == 1.0
    assert price_band_factor(1500, 10000, ty, rules) == 1.0
    assert price_band_factor(3000, 10000, ty, rules) == 1.0
    assert price_band_factor(1499, 10000, ty, rules) == 0.5
    assert price_band_factor(3001, 10000, ty, rules) == 0.5
    assert price_band_factor(10000, 10000, ty, rules) == 0.5
    assert price_band_factor(10001, 10000, ty, rules) is None
    assert price_band_factor(10001, 10000, Surface.EMAIL, rules) is None


def test_pre_purchase_surfaces_have_no_price_band() -> None:
    for surface in (Surface.PRODUCT_PAGE, Surface.CART, Surface.CHECKOUT):
        assert price_band_factor(50000, 10000, surface, RULES) == 1.0


# --- price(): the static rules in sequence ------------------------------------------------------


def test_price_applies_discount_margin_floor_and_band_and_drops_the_excluded() -> None:
    lens = product("lens", 2000, cost=1500)
    big = product("tv", 50000)
    gone = product("gone", inventory=0)
    cands = [
        Candidate(SD, "cross_sell", 0.9, "r", "complement"),
        Candidate(lens, "cross_sell", 0.5, "r", "affinity"),
        Candidate(big, "cross_sell", 0.5, "r", "affinity"),
        Candidate(gone, "cross_sell", 0.5, "r", "affinity"),
    ]
    rules = StoreRules(margin_floor=400)
    offers = price(cands, Surface.THANK_YOU, {"cam-x100"}, 10000, rules)
    assert [(o.candidate.product.id, o.discount_pct, o.offer_price, o.margin) for o in offers] == [
        ("sd-128", 10, 2699, 1499),
        ("lens", 5, 1900, 400),
    ]
    assert [o.band_factor for o in offers] == [1.0, 1.0]


def test_price_drops_kinds_the_surface_does_not_allow_but_keeps_replenishing_an_anchor() -> None:
    x200 = product("cam-x200", 79900, family="camera-x", tier=2)
    cands = [
        Candidate(x200, "upsell", 0.8, "r", "ladder"),
        Candidate(SERUM, "replenish", 0.8, "r", "replenish", due_at_ms=NOW),
        Candidate(SERUM, "cross_sell", 0.8, "r", "affinity"),
    ]
    offers = price(cands, Surface.EMAIL, {"serum"}, 20000, RULES)
    assert [(o.candidate.kind, o.discount_pct, o.offer_price) for o in offers] == [
        ("replenish", 5, 3800)
    ]
    assert offers[0].band_factor == 1.0  # 3800 is 19% of the order: inside the band


# --- diversity ----------------------------------------------------------------------------------


def test_one_product_per_family_and_a_product_without_family_is_its_own() -> None:
    x200 = product("cam-x200", 79900, family="camera-x", tier=2)
    x300 = product("cam-x300", 119900, family="camera-x", tier=3)
    # A product whose id equals a family name is still not in that family.
    loner = product("camera-x", 500)
    offers = [offer(x300), offer(SD), offer(x200), offer(loner), offer(product("cap"))]
    kept = diversify(offers)
    assert [o.candidate.product.id for o in kept] == ["cam-x300", "sd-128", "camera-x", "cap"]


# --- price fit on pre-purchase surfaces ---------------------------------------------------------

BATTERY = product("battery", 3499, category="camera-accessories")
CAMERA = product("camera", 107_900, category="cameras")
CAP = product("cap", 999, category="camera-accessories")


def cross_sells(surface: Surface, rules: StoreRules, *anchors: Product) -> list[str]:
    """What decide offers for `anchors` when both the camera and the cap are their neighbours
    (the camera the stronger one): each offer's product, or a bundle's complements."""
    from offer_service.decision.candidates import CandidateInputs
    from offer_service.decision.decide import decide
    from offer_service.domain.records import EMPTY_VISITOR, PairCount

    catalog = {p.id: p for p in (BATTERY, CAMERA, CAP, *anchors)}
    neighbors = {a.id: [PairCount("camera", 40, 0.5), PairCount("cap", 10, 0.1)] for a in anchors}
    inputs = CandidateInputs(
        surface=surface, anchors=anchors, products=catalog, neighbors=neighbors,
        basket_counts={}, basket_total=100, family_members={}, category_best_sellers={},
    )  # fmt: skip
    offers = decide(inputs, rules, EMPTY_VISITOR, limit=5, now_ms=NOW)
    return [
        p.id for o in offers for p in ([i.product for i in o.items[1:]] or [o.candidate.product])
    ]


def test_a_cross_sell_far_pricier_than_the_cart_is_left_out() -> None:
    # A $1,079 camera as the last thing to add to a $34.99 battery: it does not fit.
    assert cross_sells(Surface.CHECKOUT, RULES, BATTERY) == ["cap"]
    assert cross_sells(Surface.CART, RULES, BATTERY) == ["cap"]
    assert cross_sells(Surface.PRODUCT_PAGE, RULES, BATTERY) == ["cap"]
    # The cart's subtotal is the reference: with a $400 lens in it, the camera fits.
    lens = product("lens", 40_000, category="lenses")
    assert cross_sells(Surface.CART, RULES, BATTERY, lens) == ["camera", "cap"]


def test_the_price_fit_follows_the_rules() -> None:
    exact = StoreRules(price_fit={"cart": 107_900 / 3499, "product_page": 107_900 / 3499})
    assert cross_sells(Surface.CHECKOUT, exact, BATTERY) == ["camera"]
    assert cross_sells(Surface.PRODUCT_PAGE, exact, BATTERY) == ["camera", "cap"]
    off = StoreRules(price_fit={"cart": None, "product_page": None})
    assert cross_sells(Surface.CART, off, BATTERY) == ["camera", "cap"]
    # Post-purchase surfaces keep their own price band, whatever the price fit says.
    assert price_band_factor(107_900, 3499, Surface.THANK_YOU, RULES) is None
