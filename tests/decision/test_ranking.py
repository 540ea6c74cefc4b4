from __future__ import annotations

import pytest

from offer_service.decision.candidates import Candidate
from offer_service.decision.ranking import ASSUMED_MARGIN_SHARE, rank, score, value
from offer_service.decision.rules import PricedOffer
from offer_service.domain.policy import StoreRules
from offer_service.domain.products import Product
from offer_service.domain.surfaces import SURFACES, Surface

# The expected-value ranking (value weighed in full), whose arithmetic these tests check.
BY_PRICE = StoreRules(value="price", value_weight=1.0)
BY_MARGIN = StoreRules(value="margin", value_weight=1.0)


def offer(
    pid: str,
    offer_price: int,
    relevance: float = 0.5,
    *,
    cost: int | None = None,
    band_factor: float = 1.0,
) -> PricedOffer:
    p = Product(id=pid, title=pid, price=offer_price, cost=cost)
    margin = None if cost is None else offer_price - cost
    c = Candidate(p, "cross_sell", relevance, "why", "affinity")
    return PricedOffer(c, 0, offer_price, margin, band_factor)


def ids(offers: list[PricedOffer]) -> list[str]:
    return [o.candidate.product.id for o in offers]


def test_score_uses_the_surface_prior_for_p_accept() -> None:
    o = offer("sd-128", 2000, 0.5)
    assert score(o, Surface.PRODUCT_PAGE, BY_PRICE) == pytest.approx(0.5 * 0.10 * 2000)
    assert score(o, Surface.CART, BY_PRICE) == pytest.approx(0.5 * 0.08 * 2000)
    assert score(o, Surface.CHECKOUT, BY_PRICE) == pytest.approx(0.5 * 0.06 * 2000)
    assert score(o, Surface.THANK_YOU, BY_PRICE) == pytest.approx(0.5 * 0.05 * 2000)
    assert score(o, Surface.EMAIL, BY_PRICE) == pytest.approx(0.5 * 0.04 * 2000)
    assert score(o, Surface.SMS, BY_PRICE) == pytest.approx(0.5 * 0.03 * 2000)
    assert [SURFACES[s].accept_prior for s in Surface] == [0.10, 0.08, 0.06, 0.05, 0.04, 0.03]


def test_a_learned_p_accept_replaces_the_prior() -> None:
    o = offer("sd-128", 2000, 0.5)
    assert score(o, Surface.CART, BY_PRICE, p_accept=0.25) == pytest.approx(0.5 * 0.25 * 2000)
    cheap_but_loved = offer("cap", 1000, 0.5)
    pricey = offer("lens", 3000, 0.5)
    assert ids(rank([cheap_but_loved, pricey], Surface.CART, BY_PRICE)) == ["lens", "cap"]
    learned = {"cap": 0.5}
    assert ids(rank([cheap_but_loved, pricey], Surface.CART, BY_PRICE, learned)) == ["cap", "lens"]


def test_the_price_band_factor_scales_the_score() -> None:
    inside = offer("a", 2000, 0.5)
    outside = offer("b", 2000, 0.5, band_factor=0.5)
    s = score(inside, Surface.THANK_YOU, BY_PRICE)
    assert score(outside, Surface.THANK_YOU, BY_PRICE) == pytest.approx(s / 2)


def test_value_by_price_is_the_offer_price() -> None:
    assert value(offer("a", 2699, cost=1200), BY_PRICE) == 2699.0


def test_value_by_margin_uses_the_known_margin_or_an_assumed_share() -> None:
    assert value(offer("a", 2699, cost=1200), BY_MARGIN) == 1499.0
    assert ASSUMED_MARGIN_SHARE == 0.3
    assert value(offer("b", 2000), BY_MARGIN) == pytest.approx(600.0)
    assert value(offer("c", 1000, cost=1100), BY_MARGIN) == 0.0  # never negative


def test_value_mode_changes_the_order() -> None:
    thin = offer("tv", 10000, 0.5, cost=9500)  # margin 500
    fat = offer("cable", 3000, 0.5, cost=500)  # margin 2500
    assert ids(rank([fat, thin], Surface.PRODUCT_PAGE, BY_PRICE)) == ["tv", "cable"]
    assert ids(rank([thin, fat], Surface.PRODUCT_PAGE, BY_MARGIN)) == ["cable", "tv"]


def test_rank_orders_by_score_descending() -> None:
    offers = [offer("a", 1000, 0.5), offer("b", 3000, 0.5), offer("c", 2000, 0.9)]
    # scores x prior: a 500, b 1500, c 1800
    assert ids(rank(offers, Surface.PRODUCT_PAGE, BY_PRICE)) == ["c", "b", "a"]


def test_equal_scores_break_ties_by_higher_relevance_then_lower_product_id() -> None:
    strong = offer("z-strong", 2000, 0.5)
    weak = offer("a-weak", 4000, 0.25)
    assert score(strong, Surface.CART, BY_PRICE) == score(weak, Surface.CART, BY_PRICE)
    assert ids(rank([weak, strong], Surface.CART, BY_PRICE)) == ["z-strong", "a-weak"]

    twins = [offer("sd-256", 2000, 0.5), offer("sd-128", 2000, 0.5), offer("sd-64", 2000, 0.5)]
    expected = ["sd-128", "sd-256", "sd-64"]  # string order
    assert ids(rank(twins, Surface.CART, BY_PRICE)) == expected
    assert ids(rank(list(reversed(twins)), Surface.CART, BY_PRICE)) == expected


def test_by_default_the_likeliest_offer_leads_and_value_breaks_ties() -> None:
    likely, pricey = offer("mug", 1000, 0.3), offer("lamp", 30_000, 0.1)
    assert ids(rank([pricey, likely], Surface.CART, StoreRules())) == ["mug", "lamp"]
    # Weighed in full, value makes the less likely offer the more valuable one...
    assert ids(rank([likely, pricey], Surface.CART, BY_PRICE)) == ["lamp", "mug"]
    # ...and part-way, in between: 0.3 x 1000 ** 0.5 = 9.5 < 0.1 x 30000 ** 0.5 = 17.3.
    half = StoreRules(value_weight=0.5)
    assert score(pricey, Surface.CART, half) == pytest.approx(0.1 * 0.08 * 30_000**0.5)
    assert ids(rank([likely, pricey], Surface.CART, half)) == ["lamp", "mug"]
    # Equally likely: the pricier first, whatever the ids.
    tie = [offer("a", 1000, 0.2), offer("b", 5000, 0.2)]
    assert ids(rank(tie, Surface.CART, StoreRules())) == ["b", "a"]
