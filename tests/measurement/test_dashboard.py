"""The dashboard page and its charts, rendered from reports (no server needed)."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from offer_service.domain.policy import StoreRules
from offer_service.domain.records import SigningKey, StoreRecord
from offer_service.measurement import charts
from offer_service.measurement.dashboard import amount, link_signature, link_valid, page
from offer_service.measurement.report import ReportQuery, build
from tests.measurement.test_report import ACCEPTS, EVENTS, ORDERS, PRODUCTS, day

CHART_IDS = (
    "take-rate-by-surface",
    "incremental-rpv",
    "attach-rate-over-time",
    "top-offers-by-margin",
    "returns",
)
RECORD = StoreRecord(
    id="st_1", name="Shop <b>", publishable_key="pk", secret_key="sk_secret",
    webhook_secrets=("wh",), signing_keys=(SigningKey("k", b"k"),), rules=StoreRules(),
    created_at_ms=0,
)  # fmt: skip


def fixture_report(**changes: Any) -> dict[str, Any]:
    q = ReportQuery("st_1", day(0), day(10), None, 7, 0.1)
    orders = [o for o in ORDERS if day(0) <= o.placed_at_ms < day(10)]
    products = dict(PRODUCTS)
    for pid, title in changes.items():
        products[pid] = dataclasses.replace(products[pid], title=title)
    return build(q, EVENTS, ACCEPTS, orders, products, day(10))


def test_every_chart_is_on_the_page_with_its_figures() -> None:
    html = page(fixture_report(), RECORD.name, {}, ["cart", "product_page"])
    for chart in CHART_IDS:
        svg = re.search(rf'<svg[^>]*data-chart="{chart}".*?</svg>', html, re.S)
        assert svg is not None, chart
        assert "data-value=" in svg.group(0), chart
    assert "<script" not in html and " style=" not in html
    assert "Shop &lt;b&gt;" in html


def test_text_from_the_catalog_never_becomes_markup() -> None:
    evil = '<img src=x onerror="alert(1)">'
    html = page(fixture_report(lens=evil), "Shop", {}, ["cart"])
    assert evil not in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html


def test_an_empty_period_says_so_in_every_chart() -> None:
    q = ReportQuery("st_1", day(20), day(21), None, 7, 0.1)
    html = page(build(q, [], [], [], {}, day(21)), "Shop", {}, ["cart"])
    assert html.count('data-empty="true"') == len(CHART_IDS)


def test_signed_links_are_bound_to_store_expiry_and_secret() -> None:
    sig = link_signature("sk_secret", "st_1", 2_000)
    assert link_valid(RECORD, "2000", sig, now_s=1_999)
    assert not link_valid(RECORD, "2000", sig, now_s=2_000)  # expired
    assert not link_valid(RECORD, "2001", sig, now_s=1_000)
    assert not link_valid(RECORD, "2000", link_signature("sk_other", "st_1", 2_000), 1_000)
    assert not link_valid(RECORD, "soon", sig, now_s=1_000)


def test_money_is_formatted_from_minor_units() -> None:
    assert amount(123456.5, "USD") == "$1,234.57"
    assert amount(-250, "EUR", signed=True) == "-€2.50"
    assert amount(250, "EUR", signed=True) == "+€2.50"
    assert amount(1500, "JPY") == "¥1,500"
    assert amount(99, "CHF") == "CHF\u00a00.99"
    assert amount(None, "USD") == "n/a"


def test_intervals_are_coloured_by_what_they_say() -> None:
    svg = charts.intervals(
        "x",
        "t",
        [
            charts.Figure("up", 5, 1, 9),
            charts.Figure("down", -5, -9, -1),
            charts.Figure("unsure", 1, -2, 4),
        ],
        str,
    )
    fills = re.findall(r'<circle[^>]*fill="(#[0-9a-f]+)"', svg)
    assert fills == [charts.GOOD, charts.BAD, charts.MUTED]
