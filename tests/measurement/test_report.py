"""Every figure of the report on a small fixture, against the hand computation in the comments.

The fixture (times in days after T0; the period is [T0, T0 + 10 days), window 7 days):
- visitors: v1 (treatment, arm exp:a), v2 (exp:b), v3 (exp:a), h1 and h2 (holdout);
- offers: A = sd on product_page (cross_sell, exp:a), A2 = sd on product_page (exp:b),
  B = lens on product_page (upsell, exp:a), C = lens on thank_you (cross_sell, exp:b, order o2),
  D = bag on cart (cross_sell, exp:a); A also shown once to an anonymous visitor (arm none);
- v1 sees A twice (one impression counted), sees B, clicks A at day 1, orders o1 (cam 50000 +
  sd 2700) at day 2 and returns the sd; orders o6 (lens 10000, never clicked) at day 6;
- v2 sees A2, orders o2 (cam 50000) at day 3 and accepts C one-click (lens 9000 appended);
- v3 sees and clicks D at day 1 but buys the bag (o3, 4000) only at day 9: outside the window;
- h1 orders o4 (cam 50000) at day 4; h2 buys nothing; a guest orders o5 (sd 3000) at day 5;
- o7 (v1, before the period) and o8 (EUR) are left out.
"""

from __future__ import annotations

import math
import statistics

import pytest

from offer_service.domain.events import StoredEvent
from offer_service.domain.orders import AcceptedOffer, Order, OrderLine
from offer_service.domain.products import Product
from offer_service.measurement.exposures import exposure
from offer_service.measurement.report import ReportQuery, build
from offer_service.measurement.report_csv import to_csv
from offer_service.measurement.statistics import Z95
from offer_service.types import DAY_MS
from offer_service.web.report_models import MetricsReport

T0 = 1_700_000_000_000


def day(d: float) -> int:
    return T0 + int(d * DAY_MS)


def product(pid: str, price: int, cost: int | None) -> Product:
    return Product(
        id=pid, title=pid.upper(), price=price, currency="USD", url="/p", image_url="/i",
        category="c", cost=cost,
    )  # fmt: skip


PRODUCTS = {
    "cam": product("cam", 50000, 30000),
    "sd": product("sd", 3000, 1000),
    "lens": product("lens", 10000, 6000),
    "bag": product("bag", 4000, None),
}

_n = 0


def ev(
    kind: str,
    offer: str,
    visitor: str | None,
    at: float,
    *,
    surface: str = "product_page",
    offer_kind: str = "cross_sell",
    product_id: str = "sd",
    arm: str | None = "exp:a",
    order_id: str | None = None,
) -> StoredEvent:
    global _n
    _n += 1
    return StoredEvent(
        id=f"e{_n}", type=kind, ts_ms=day(at), received_ms=day(at), visitor_id=visitor,
        surface=surface, kind=offer_kind, product_id=product_id, offer_id=offer,
        order_id=order_id, arm=arm, offer_price=0, currency="USD",
    )  # fmt: skip


LENS_PP = {"offer_kind": "upsell", "product_id": "lens"}
LENS_TY = {"surface": "thank_you", "product_id": "lens", "arm": "exp:b", "order_id": "o2"}
BAG = {"surface": "cart", "product_id": "bag"}

EVENTS = [
    exposure("v1", "product_page", holdout=False, arm="exp:a", at_ms=day(0.5)),
    exposure("v2", "product_page", holdout=False, arm="exp:b", at_ms=day(0.5)),
    exposure("v2", "thank_you", holdout=False, arm="exp:b", at_ms=day(3)),
    exposure("v3", "cart", holdout=False, arm="exp:a", at_ms=day(1)),
    exposure("h1", "product_page", holdout=True, arm=None, at_ms=day(0.5)),
    exposure("h2", "product_page", holdout=True, arm=None, at_ms=day(0.5)),
    ev("impression", "A", "v1", -1),  # before the period: not counted
    ev("impression", "A", "v1", 0.9),
    ev("impression", "A", "v1", 0.95),  # the same offer to the same visitor: once
    ev("impression", "B", "v1", 0.9, **LENS_PP),
    ev("click", "A", "v1", 1),
    ev("impression", "A2", "v2", 0.9, arm="exp:b"),
    ev("impression", "C", "v2", 3, **LENS_TY),
    ev("accept", "C", "v2", 3, **LENS_TY),  # the snippet's echo: the charged accept counts
    ev("impression", "D", "v3", 1, **BAG),
    ev("click", "D", "v3", 1, **BAG),
    ev("impression", "A", None, 2, arm=None),  # anonymous: counted by event id
]


def order(
    oid: str, at: float, lines: list[tuple[str, int]], visitor: str | None, **kw: object
) -> Order:
    return Order(
        id=oid, placed_at_ms=day(at), currency=str(kw.get("currency", "USD")),
        lines=tuple(OrderLine(p, 1, price) for p, price in lines), visitor_id=visitor,
        returned=tuple(kw.get("returned", ())),  # type: ignore[arg-type]
    )  # fmt: skip


ORDERS = [
    order("o7", -1, [("sd", 2700)], "v1"),
    order("o1", 2, [("cam", 50000), ("sd", 2700)], "v1", returned=["sd"]),
    order("o2", 3, [("cam", 50000), ("lens", 9000)], "v2"),
    order("o4", 4, [("cam", 50000)], "h1"),
    order("o5", 5, [("sd", 3000)], None),
    order("o6", 6, [("lens", 10000)], "v1"),
    order("o8", 7, [("cam", 45000)], "v1", currency="EUR"),
    order("o3", 9, [("bag", 4000)], "v3"),
]
ACCEPTS = [AcceptedOffer("o2", "lens", "ch_1", day(3.01))]


def report(surface: str | None = None) -> dict[str, object]:
    q = ReportQuery("st", day(0), day(10), surface, window_days=7, holdout_share=0.1)
    in_period = [o for o in ORDERS if day(0) <= o.placed_at_ms < day(10)]
    data = build(q, EVENTS, ACCEPTS, in_period, PRODUCTS, day(10))
    MetricsReport.model_validate(data)  # the documented shape, exactly
    return data


def interval(x: float, n: int) -> list[float]:
    """Wilson, written out again from its textbook form."""
    p, z = x / n, Z95
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return [max(0.0, centre - half), min(1.0, centre + half)]


def near(got: dict[str, object], value: float, ci: list[float], tol: float = 1e-5) -> None:
    assert got["value"] == pytest.approx(value, abs=tol)
    assert got["ci"] == pytest.approx(ci, abs=tol)


def near_amount(got: dict[str, object], value: float, ci: list[float]) -> None:
    """Averages of money are given in minor units to two decimals."""
    near(got, value, ci, tol=0.005 + 1e-9)


def test_totals_count_unique_impressions_clicks_and_credited_accepts() -> None:
    t = report()["totals"]
    # Impressions (A,v1) (B,v1) (A2,v2) (C,v2) (D,v3) (A,anonymous) = 6; clicks (A,v1) (D,v3).
    assert (t["impressions"], t["clicks"]) == (6, 2)
    # o1's sd (clicked 1 day before) and o2's lens (one-click); o3's bag is 8 days after its
    # click, outside the 7-day window; o6's lens was never clicked.
    assert (t["accepts"], t["one_click_accepts"], t["click_attributed_purchases"]) == (2, 1, 1)
    near(t["take_rate"], 2 / 6, interval(2, 6))
    near(t["click_through_rate"], 2 / 6, interval(2, 6))
    # Orders of the period in USD: o1 o2 o3 o4 o5 o6; with an offer item: o1 and o2.
    assert t["orders_with_offer_items"] == 2
    near(t["attach_rate"], 2 / 6, interval(2, 6))
    assert t["attributed_revenue"] == {"amount": 2700 + 9000, "currency": "USD"}
    assert t["refunded_revenue"]["amount"] == 2700  # o1's sd came back
    assert t["refund_adjusted_revenue"]["amount"] == 9000
    # lens 9000 - cost 6000; the returned sd earned nothing.
    assert t["margin_contribution"]["amount"] == 3000
    assert (t["items_with_known_cost"], t["returned_items"]) == (2, 1)
    near(t["return_rate"], 0.5, interval(1, 2))


def test_breakdown_by_surface_kind_product_and_arm() -> None:
    by = report()["breakdown"]
    surface = {r["surface"]: r for r in by["surface"]}
    pp, ty, cart = surface["product_page"], surface["thank_you"], surface["cart"]
    assert (pp["impressions"], pp["clicks"], pp["accepts"]) == (4, 1, 1)
    near(pp["take_rate"], 1 / 4, interval(1, 4))
    near(pp["attach_rate"], 1 / 6, interval(1, 6))
    assert pp["attributed_revenue"]["amount"] == 2700 and pp["margin_contribution"]["amount"] == 0
    assert (ty["impressions"], ty["accepts"], ty["one_click_accepts"]) == (1, 1, 1)
    near(ty["take_rate"], 1.0, interval(1, 1))
    assert ty["margin_contribution"]["amount"] == 3000
    near(ty["return_rate"], 0.0, interval(0, 1))
    assert (cart["impressions"], cart["clicks"], cart["accepts"]) == (1, 1, 0)
    near(cart["click_through_rate"], 1.0, interval(1, 1))
    assert cart["return_rate"] == {"value": None, "ci": None}
    kind = {r["kind"]: r for r in by["kind"]}
    assert (kind["cross_sell"]["impressions"], kind["cross_sell"]["accepts"]) == (5, 2)
    assert (kind["upsell"]["impressions"], kind["upsell"]["accepts"]) == (1, 0)
    prod = {r["product_id"]: r for r in by["product"]}
    assert (prod["sd"]["impressions"], prod["sd"]["accepts"], prod["sd"]["title"]) == (3, 1, "SD")
    assert (prod["lens"]["impressions"], prod["lens"]["accepts"]) == (2, 1)
    assert (prod["bag"]["impressions"], prod["bag"]["clicks"]) == (1, 1)
    arm = {r["arm"]: r for r in by["arm"]}
    assert (arm["exp:a"]["impressions"], arm["exp:a"]["clicks"], arm["exp:a"]["accepts"]) == (
        3,
        2,
        1,
    )
    assert (arm["exp:b"]["impressions"], arm["exp:b"]["accepts"]) == (2, 1)
    assert (arm[None]["impressions"], arm[None]["accepts"]) == (1, 0)
    # Rows are ordered by attributed revenue.
    assert [r["surface"] for r in by["surface"]] == ["thank_you", "product_page", "cart"]


def test_order_metrics_aov_with_and_without_offer_items() -> None:
    o = report()["orders"]
    totals = [52700, 59000, 50000, 3000, 10000, 4000]  # o1 o2 o4 o5 o6 o3
    assert o["orders"] == 6 and o["orders_with_offer_items"] == 2
    assert o["revenue"]["amount"] == 178700
    assert o["offer_item_revenue"]["amount"] == 11700
    half = Z95 * statistics.stdev(totals) / math.sqrt(6)
    near_amount(o["aov"], 178700 / 6, [178700 / 6 - half, 178700 / 6 + half])
    without = [50000, 50000, 50000, 3000, 10000, 4000]
    half = Z95 * statistics.stdev(without) / math.sqrt(6)
    near_amount(o["aov_without_offer_items"], 167000 / 6, [167000 / 6 - half, 167000 / 6 + half])
    assert o["aov_of_orders_with_offer_items"]["value"] == (52700 + 59000) / 2
    assert o["aov_of_orders_without_offer_items"]["value"] == (50000 + 3000 + 10000 + 4000) / 4
    assert o["aov"]["currency"] == "USD"


def test_treatment_against_holdout() -> None:
    r = report()
    h = r["holdout"]
    # Treatment: v1 (o1 52700 + o6 10000, net 60000 after the sd), v2 (59000), v3 (4000).
    # Holdout: h1 (50000), h2 (nothing). Visitors are counted once however many exposures.
    assert h["sample_sizes"] == {"treatment": 3, "holdout": 2}
    t, c = h["groups"]["treatment"], h["groups"]["holdout"]
    assert (t["visitors"], t["converted"], t["orders"]) == (3, 3, 4)
    assert (c["visitors"], c["converted"], c["orders"]) == (2, 1, 1)
    near(t["conversion_rate"], 1.0, interval(3, 3))
    near(c["conversion_rate"], 0.5, interval(1, 2))
    assert t["revenue_per_visitor"]["value"] == pytest.approx((62700 + 59000 + 4000) / 3)
    assert t["net_revenue_per_visitor"]["value"] == pytest.approx((60000 + 59000 + 4000) / 3)
    assert c["revenue_per_visitor"]["value"] == 25000
    # AOV by the delta method: (x, y) = (2, 62700), (1, 59000), (1, 4000); R = 125700 / 4.
    r_hat = 125700 / 4
    resid = [62700 - 2 * r_hat, 59000 - r_hat, 4000 - r_hat]
    half = Z95 * math.sqrt(sum(e * e for e in resid) / (3 * 2)) / (4 / 3)
    near_amount(t["aov"], r_hat, [r_hat - half, r_hat + half])
    # Conversion difference (Newcombe): 1 - 0.5, from the two Wilson intervals.
    l1, u1 = interval(3, 3)
    l2, u2 = interval(1, 2)
    d = 0.5
    near(
        h["conversion_rate_difference"],
        d,
        [
            d - math.sqrt((1 - l1) ** 2 + (u2 - 0.5) ** 2),
            d + math.sqrt((u1 - 1) ** 2 + (0.5 - l2) ** 2),
        ],
    )
    # Incremental revenue per visitor (Welch): 41900 - 25000.
    se = math.sqrt(
        statistics.variance([62700, 59000, 4000]) / 3 + statistics.variance([50000, 0]) / 2
    )
    inc = h["incremental_revenue_per_visitor"]
    assert inc["value"] == pytest.approx(16900)
    assert inc["ci"] == pytest.approx([16900 - Z95 * se, 16900 + Z95 * se], abs=0.01)
    assert h["incremental_revenue"]["value"] == pytest.approx(16900 * 3)
    arms = {a["arm"]: a for a in h["arms"]}
    assert arms["exp:a"]["visitors"] == 2
    assert arms["exp:a"]["revenue_per_visitor"]["value"] == (62700 + 4000) / 2
    assert arms["exp:a"]["incremental_revenue_per_visitor"]["value"] == (62700 + 4000) / 2 - 25000
    assert arms["exp:b"]["revenue_per_visitor"]["value"] == 59000


def test_report_states_its_window_currency_and_left_out_orders() -> None:
    r = report()
    assert r["attribution"]["window_days"] == 7
    assert "7 days" in r["attribution"]["rule"]
    assert r["currency"] == "USD" and r["orders_in_other_currencies"] == 1


def test_attach_rate_series_buckets_every_order_of_the_period() -> None:
    s = report()["series"]["attach_rate"]
    # Orders span days 2 to 9: 7 days fit 40 buckets of 6 hours (3 hours would need 57).
    assert s["bucket_ms"] == 6 * 3_600_000
    points = s["points"]
    assert sum(p["orders"] for p in points) == 6
    assert sum(p["orders_with_offer_items"] for p in points) == 2
    first = next(p for p in points if p["orders"])
    assert first["attach_rate"]["value"] == 1.0  # o1, with its sd


def test_a_surface_report_keeps_that_surface_and_its_visitors() -> None:
    r = report("cart")
    assert (r["totals"]["impressions"], r["totals"]["accepts"]) == (1, 0)
    assert [row["surface"] for row in r["breakdown"]["surface"]] == ["cart"]
    assert r["orders"]["orders_with_offer_items"] == 0
    # Only v3 was seen on the cart.
    assert r["holdout"]["sample_sizes"] == {"treatment": 1, "holdout": 0}
    assert r["holdout"]["incremental_revenue_per_visitor"]["value"] is None


def test_csv_has_one_row_per_figure() -> None:
    text = to_csv(report())
    lines = text.splitlines()
    assert lines[0] == "section,dimension,key,metric,value,ci_low,ci_high,currency"
    assert "report,,,attribution_window_days,7,,," in lines
    assert "totals,,,impressions,6,,," in lines
    row = next(x for x in lines if x.startswith("holdout,,,incremental_revenue_per_visitor,"))
    assert row.split(",")[4] == "16900.0"
    assert any(x.startswith("breakdown,surface,thank_you,take_rate,1.0,") for x in lines)
    assert any(x.startswith("holdout,arm,exp:a,revenue_per_visitor,33350.0,") for x in lines)
