"""The simulator's true values, on shoppers small enough to compute by hand."""

from __future__ import annotations

from typing import Any

import pytest

from offer_service_tools.sim_model import Behaviour, OfferSeen, Shopper, truths, uniform
from offer_service_tools.simulate import verdict

B = Behaviour(
    surface_mix={"product_page": 1.0},
    conversion=0.5,
    click_rate={"product_page": 0.2},
    buy_after_click={"product_page": 0.5},
    thank_you_take=0.1,
    organic_share=1.0,
    offer_return_rate=0.1,
    base_return_rate=0.0,
)
SD = OfferSeen("sd", 1000, "off_1", "t")
LENS = OfferSeen("lens", 5000, "off_2", "t")


def shopper(i: int, holdout: bool, *, converted: bool, offers: list[OfferSeen]) -> Shopper:
    s = Shopper(i, f"v{i}", "product_page", ("cam",), [("cam", 10000)], f"k{i}")
    s.holdout = holdout
    s.p_conv = B.conversion
    s.converted = converted
    if holdout:
        s.would_be = offers
        s.organic_later_pool = [LENS] if converted else []
    else:
        s.offers = offers
        s.thank_you_offers = [LENS] if converted else []
    return s


def test_with_every_offer_purchase_organic_the_true_effect_is_zero() -> None:
    shoppers = [
        shopper(0, False, converted=True, offers=[SD]),
        shopper(1, False, converted=False, offers=[SD]),
        shopper(2, True, converted=True, offers=[SD]),
        shopper(3, True, converted=False, offers=[SD]),
    ]
    t = truths(shoppers, B, {("product_page", ("cam",)): 1.0})
    # E[order | converted] = 10000 + 0.2 * 0.5 * 1000 (sd) + 0.1 * 5000 (thank-you lens) = 10600
    assert t["revenue_per_visitor[treatment]"] == pytest.approx(0.5 * 10600)
    assert t["revenue_per_visitor[holdout]"] == pytest.approx(0.5 * 10600)
    assert t["incremental_revenue_per_visitor"] == pytest.approx(0.0)
    assert t["take_rate[product_page]"] == pytest.approx(0.5 * 0.2 * 0.5)
    assert t["take_rate[thank_you]"] == 0.1
    assert t["conversion_rate_difference"] == 0.0
    # Attach: only treatment orders hold credited items: 1 - (1 - 0.1) * (1 - 0.1) = 0.19,
    # and half the orders are the holdout's.
    assert t["attach_rate"] == pytest.approx(0.19 / 2)
    assert t["aov"] == pytest.approx(10600)
    assert t["aov_without_offer_items"] == pytest.approx((10000 + 10600) / 2)


def test_an_incremental_arm_adds_its_extra_purchases() -> None:
    b = Behaviour(**{**B.__dict__, "organic_share": 0.0})
    shoppers = [shopper(0, False, converted=True, offers=[SD, LENS])]
    shoppers += [shopper(1, True, converted=True, offers=[SD, LENS])]
    t = truths(shoppers, b, {("product_page", ("cam",)): 1.0})
    # Treatment: 10000 + 0.1 * (1000 + 5000) + 0.1 * 5000; holdout buys nothing extra.
    assert t["incremental_revenue_per_visitor"] == pytest.approx(0.5 * (600 + 500))
    assert t["incremental_net_revenue_per_visitor"] == pytest.approx(0.5 * 1100 * 0.9)


def test_draws_are_uniform_and_fixed_by_their_key() -> None:
    bins = [0] * 20
    for i in range(20_000):
        bins[int(uniform(f"7:{i}:convert") * 20)] += 1
    assert sum((b - 1000) ** 2 / 1000 for b in bins) < 43.8  # chi-square, 19 df, p = 0.001
    s = shopper(0, False, converted=True, offers=[SD])
    assert s.draw("click", SD) == s.draw("click", "sd") != s.draw("buy", SD)


def test_a_failing_run_names_what_fell_outside_its_interval() -> None:
    def row(name: str, inside: bool, ci: tuple[float, float] | None = (0.0, 1.0)) -> dict[str, Any]:
        return {"parameter": name, "checked": ci is not None, "inside": inside, "ci": ci}

    assert verdict([row("aov", True), row("attributed_revenue", False, None)]) is None
    message = verdict([row("aov", True), row("attach_rate", False), row("return_rate", False)])
    assert message is not None and message.startswith(
        "error: 2 of 3 true values lie outside their 95% interval (attach_rate, return_rate)"
    )
    nothing = verdict([row("aov", False, None)])
    assert nothing is not None and "no interval to check" in nothing
