"""Orders credit offers exactly: order lines sent with an offer token, and adds to cart, in the
report read back from every backend (SQLite, Redis, Redis Cluster).

The fixture (one period, pre-purchase offers):
- `off_sd`, a cart offer of sd (arm exp:b), seen by v1 and v2; v1 adds it to the cart;
- `off_kit`, a product-page bundle of bag and strap, seen by v1, who adds it;
- an add by v3, who never saw the offer: stored as invalid traffic, counted nowhere;
- o1 (v1): cam without a token, sd with off_sd's token, bag and strap with off_kit's token;
- o2 (v2): sd with a forged token, cam with off_sd's token (another product): both refused,
  the order kept, its lines uncredited (v2 never clicked);
- o3 (no visitor): sd with off_sd's token: credited without any visitor;
- cart-1 redeems off_sd and off_kit (twice: the repeat records nothing), cart-2 off_sd.
So on cart: 2 impressions, 1 add (add rate 1/2), 2 lines redeemed, 2 token purchases in 2
orders for 2 x 2700, 1 impression taken (v1's); on product_page: 1 impression, 1 add, 2 lines
redeemed (the bundle's items), 2 token purchases in 1 order for 4050 + 1350.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from offer_service.commerce.ingest import import_orders
from offer_service.commerce.redeem import redeem
from offer_service.domain.events import StoredEvent, validate_event
from offer_service.domain.orders import Order, OrderLine
from offer_service.domain.products import Product
from offer_service.domain.records import StoreRecord
from offer_service.domain.tokens import BundleItem
from offer_service.measurement.report import ReportQuery
from offer_service.storage.protocols import Store
from offer_service.types import DAY_MS, HOUR_MS
from offer_service.web.endpoints.metrics import read_report
from offer_service.web.report_models import MetricsReport
from tests.commerce.test_redeem import offer_token
from tests.storage.test_storage_contract import new_store, store

__all__ = ["store"]

pytestmark = pytest.mark.anyio

PRODUCTS = [
    Product(id="cam", title="Camera", price=40000, cost=30000),
    Product(id="sd", title="SD card", price=3000, cost=1000),
    Product(id="bag", title="Bag", price=4500),
    Product(id="strap", title="Strap", price=1500),
]


def stored(record: StoredEvent | object) -> StoredEvent:
    assert isinstance(record, StoredEvent), record
    return record


def event(
    record: StoreRecord, n: int, kind: str, token: str, visitor: str, now: int
) -> StoredEvent:
    raw = {"id": f"e{n}", "type": kind, "token": token, "ts": now - 1000 + n, "visitor_id": visitor}
    return stored(validate_event(n, raw, record.id, record.signing_keys, now))


def line(product_id: str, price: int, token: str | None = None) -> OrderLine:
    return OrderLine(product_id, 1, price, offer_token=token)


def order(order_id: str, visitor: str | None, now: int, *lines: OrderLine) -> Order:
    return Order(order_id, now - 60_000, "USD", tuple(lines), visitor_id=visitor)


def row(rows: list[dict[str, Any]], name: str, key: str) -> dict[str, Any]:
    return next(r for r in rows if r[name] == key)


async def test_token_lines_and_adds_are_credited_in_the_report(store: Store) -> None:
    record = await new_store(store)
    await store.upsert_products(record.id, PRODUCTS)
    key = record.signing_keys[0]
    sd = offer_token(record.id, key, "sd", 3000, surface="cart", arm="exp:b", offer_id="off_sd")
    kit_items = [BundleItem("bag", 4500, 4050), BundleItem("strap", 1500, 1350)]
    kit = offer_token(
        record.id, key, "bag", 6000, items=kit_items, offer_price=5400, offer_id="off_kit"
    )
    forged = sd[:-4] + ("AAAA" if not sd.endswith("AAAA") else "BBBB")
    now = int(time.time() * 1000)
    events = [
        event(record, 1, "impression", sd, "v1", now),
        event(record, 2, "impression", sd, "v2", now),
        event(record, 3, "add", sd, "v1", now),
        event(record, 4, "impression", kit, "v1", now),
        event(record, 5, "add", kit, "v1", now),
        event(record, 6, "add", sd, "v3", now),
    ]
    assert await store.record_events(record.id, events, now - DAY_MS) == [True] * 6
    for cart, tokens in (("cart-1", [sd, kit]), ("cart-1", [sd, kit]), ("cart-2", [sd])):
        lines = await redeem(store, record, cart, tokens)
        assert all(ln["valid"] for ln in lines), lines
    orders = [
        order(
            "o1",
            "v1",
            now,
            line("cam", 40000),
            line("sd", 2700, sd),
            line("bag", 4050, kit),
            line("strap", 1350, kit),
        ),
        order("o2", "v2", now, line("sd", 3000, forged), line("cam", 40000, sd)),
        order("o3", None, now, line("sd", 2700, sd)),
    ]
    summary = await import_orders(store, record, orders, [])
    assert summary.imported == 3
    assert [r.as_dict() for r in summary.refused_tokens] == [
        {
            "order_id": "o2",
            "field": "lines[0].offer_token",
            "code": "bad_token",
            "message": "The offer token is not a valid offer token of this store; the line is "
            "kept without credit.",
        },
        {
            "order_id": "o2",
            "field": "lines[1].offer_token",
            "code": "wrong_product",
            "message": "The offer token is for another product; the line is kept without credit.",
        },
    ]
    q = ReportQuery(record.id, now - DAY_MS, now + HOUR_MS, None, 7, 0.0)
    report = await read_report(store, record, q)
    MetricsReport.model_validate(report)  # the documented shape, no field left out

    cart = row(report["breakdown"]["surface"], "surface", "cart")
    assert cart["impressions"] == 2
    assert cart["adds"] == 1
    assert cart["redeemed_lines"] == 2
    assert cart["add_rate"]["value"] == 0.5
    assert cart["token_purchases"] == 2
    assert cart["token_orders"] == 2
    assert cart["token_revenue"] == {"amount": 5400, "currency": "USD"}
    assert cart["click_attributed_purchases"] == 0
    assert cart["accepts"] == 2
    assert cart["taken_impressions"] == 1
    assert cart["take_rate"]["value"] == 0.5
    assert cart["attributed_revenue"] == {"amount": 5400, "currency": "USD"}

    page = row(report["breakdown"]["surface"], "surface", "product_page")
    assert (page["impressions"], page["adds"], page["token_purchases"]) == (1, 1, 2)
    assert page["redeemed_lines"] == 2
    assert page["token_orders"] == 1
    assert page["token_revenue"]["amount"] == 4050 + 1350
    assert page["take_rate"]["value"] == 1.0
    bundle = row(report["breakdown"]["kind"], "kind", "bundle")
    assert (bundle["token_purchases"], bundle["redeemed_lines"]) == (2, 2)
    arm = row(report["breakdown"]["arm"], "arm", "exp:b")
    assert arm["token_purchases"] == 2

    totals = report["totals"]
    assert (totals["adds"], totals["token_purchases"], totals["token_orders"]) == (2, 4, 2)
    assert totals["token_revenue"]["amount"] == 5400 + 5400
    # v3's add had no impression: invalid traffic, in no figure above.
    assert report["invalid_traffic"]["by_type"] == {"add": 1}
    assert report["orders"]["orders_with_offer_items"] == 2
    assert report["orders"]["offer_item_revenue"]["amount"] == 10800


async def test_a_token_line_is_credited_to_its_offer_before_any_click(store: Store) -> None:
    record = await new_store(store)
    await store.upsert_products(record.id, PRODUCTS)
    key = record.signing_keys[0]
    clicked = offer_token(record.id, key, "sd", 3000, surface="product_page", offer_id="off_a")
    taken = offer_token(record.id, key, "sd", 3000, surface="checkout", offer_id="off_b")
    now = int(time.time() * 1000)
    events = [
        event(record, 1, "impression", clicked, "v1", now),
        event(record, 2, "click", clicked, "v1", now),
        event(record, 3, "impression", taken, "v1", now),
    ]
    await store.record_events(record.id, events, now - DAY_MS)
    await import_orders(store, record, [order("o1", "v1", now, line("sd", 2700, taken))], [])
    q = ReportQuery(record.id, now - DAY_MS, now + HOUR_MS, None, 7, 0.0)
    report = await read_report(store, record, q)
    surfaces = {r["surface"]: r for r in report["breakdown"]["surface"]}
    assert surfaces["checkout"]["token_purchases"] == 1
    assert surfaces["checkout"]["taken_impressions"] == 1
    assert surfaces["product_page"]["click_attributed_purchases"] == 0
    assert surfaces["product_page"]["clicks"] == 1
