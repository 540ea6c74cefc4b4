"""The engine's answers with a bundle on the product page and the free-shipping gap on cart and
checkout, on SQLite and Redis: their shape, their token, and cached answers that stay correct."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from offer_service.commerce.decline import decline
from offer_service.decision.shipping import FREE_SHIPPING_REASON
from offer_service.domain.orders import Order, OrderLine
from offer_service.domain.policy import StoreRules
from offer_service.domain.products import Product
from offer_service.domain.records import StoreRecord, bundle_signal
from offer_service.domain.surfaces import Surface
from offer_service.domain.tokens import BundleItem, verify
from offer_service.serving.engine import Engine
from offer_service.storage.protocols import Store
from offer_service.web.models import CartItem, OffersRequest, OffersResponse
from tests.storage.test_storage_contract import BACKENDS

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with BACKENDS[request.param](tmp_path) as opened:
        yield opened


def _p(pid: str, price: int, cost: int, **kw: Any) -> Product:
    return Product(
        id=pid, title=pid.replace("-", " ").title(), price=price, cost=cost,
        url=f"/products/{pid}", image_url=f"/img/{pid}.svg", **kw,
    )  # fmt: skip


CAMERA = _p("camera", 49900, 31000, category="cameras", complements=("sd-128", "battery", "cap"))
SD = _p("sd-128", 2999, 1100, category="memory")
BATTERY = _p("battery", 3499, 1400, category="accessories")
CAP = _p("cap", 999, 200, category="accessories")
COFFEE = _p("coffee", 1200, 500, category="coffee", complements=("filters", "mug", "press"))
FILTERS = _p("filters", 600, 150, category="gear")
MUG = _p("mug", 1800, 700, category="gear")
PRESS = _p("press", 3500, 1400, category="gear")
TENT = _p("tent", 9900, 4000, category="camping")
CATALOG = [CAMERA, SD, BATTERY, CAP, COFFEE, FILTERS, MUG, PRESS, TENT]


async def shop(store: Store, **rules: Any) -> StoreRecord:
    rules = {"holdout_share": 0, **rules}
    record = await store.create_store("Bundles", rules=StoreRules(**rules))
    await store.upsert_products(record.id, CATALOG)
    return record


async def answer(engine: Engine, record: StoreRecord, **ask: Any) -> dict[str, Any]:
    body = await engine.offers(record, OffersRequest(**ask), "req")
    OffersResponse.model_validate_json(body)  # the wire model promises what the bytes say
    parsed: dict[str, Any] = orjson.loads(body)
    return parsed


async def test_a_product_page_answers_one_bundle_with_its_items_and_a_bound_token(
    store: Store,
) -> None:
    record = await shop(store)
    engine = Engine(store)
    body = await answer(engine, record, surface=Surface.PRODUCT_PAGE, product_id="camera", limit=4)
    bundles = [o for o in body["offers"] if o["kind"] == "bundle"]
    assert len(bundles) == 1
    (bundle,) = bundles
    assert bundle["rank"] == 1 and bundle["product_id"] == "camera"
    # The merchant's three complements are equally strong: the first two by id join it.
    assert bundle["title"] == "Camera + Battery + Cap"
    assert bundle["url"] == "/products/camera" and bundle["image_url"] == "/img/camera.svg"
    assert bundle["reason"] == "Frequently bought together"
    assert bundle["discount_pct"] == 10
    assert bundle["price"] == {"amount": 54398, "currency": "USD"}
    assert bundle["offer_price"] == {"amount": 48958, "currency": "USD"}
    assert [
        (i["product_id"], i["price"]["amount"], i["offer_price"]["amount"]) for i in bundle["items"]
    ] == [
        ("camera", 49900, 44910),
        ("battery", 3499, 3149),
        ("cap", 999, 899),
    ]
    assert bundle["items"][2]["title"] == "Cap"
    # Its complements are not offered again on their own; the bundle counts as one offer.
    singles = [o["product_id"] for o in body["offers"] if o["kind"] != "bundle"]
    assert singles == ["sd-128"]
    assert "items" not in body["offers"][1]
    claims = verify(bundle["token"], record.signing_keys, time.time())
    assert (claims.kind, claims.product_id, claims.price, claims.offer_price) == (
        "bundle", "camera", 54398, 48958,
    )  # fmt: skip
    assert claims.items == (
        BundleItem("camera", 49900, 44910),
        BundleItem("battery", 3499, 3149),
        BundleItem("cap", 999, 899),
    )


async def test_a_visitor_who_bought_a_complement_gets_the_bundle_without_it(store: Store) -> None:
    record = await shop(store)
    order = Order(
        id="o-1", placed_at_ms=int(time.time() * 1000) - 60_000, currency="USD",
        lines=(OrderLine("cap", 1, 999),), customer_id="c-1", visitor_id="v-1",
    )  # fmt: skip
    await store.add_orders(record.id, [order])
    engine = Engine(store)
    body = await answer(
        engine, record, surface=Surface.PRODUCT_PAGE, product_id="camera", visitor_id="v-1",
        customer_id="c-1",
    )  # fmt: skip
    (bundle,) = [o for o in body["offers"] if o["kind"] == "bundle"]
    assert [i["product_id"] for i in bundle["items"]] == ["camera", "battery"]
    assert "cap" not in {o["product_id"] for o in body["offers"]}
    # Another visitor is still offered the whole bundle from the same cached list.
    other = await answer(engine, record, surface=Surface.PRODUCT_PAGE, product_id="camera")
    assert [i["product_id"] for i in other["offers"][0]["items"]] == ["camera", "battery", "cap"]


async def test_bundles_switched_off_and_other_surfaces_have_none(store: Store) -> None:
    record = await shop(store, bundles=False)
    engine = Engine(store)
    body = await answer(engine, record, surface=Surface.PRODUCT_PAGE, product_id="camera")
    assert {o["kind"] for o in body["offers"]} == {"cross_sell"}
    record = await shop(store)
    cart = await answer(engine, record, surface=Surface.CART, items="camera")
    assert cart["offers"] and {o["kind"] for o in cart["offers"]} <= {"cross_sell", "upsell"}


async def test_the_free_shipping_gap_below_at_and_above_the_threshold(store: Store) -> None:
    record = await shop(store, free_shipping_threshold=3000)
    engine = Engine(store)
    below = await answer(engine, record, surface=Surface.CART, items="coffee")
    assert below["free_shipping"] == {
        "threshold": {"amount": 3000, "currency": "USD"},
        "remaining": {"amount": 1800, "currency": "USD"},
    }
    # Only the press ($31.50 at 10% off) closes the $18 gap: it leads, and says so.
    assert below["offers"][0]["product_id"] == "press"
    assert below["offers"][0]["reason"] == FREE_SHIPPING_REASON
    assert below["offers"][1]["reason"] != FREE_SHIPPING_REASON
    # The tent would close it too, but nothing relates it to coffee.
    assert "tent" not in {o["product_id"] for o in below["offers"]}
    checkout = await answer(engine, record, surface=Surface.CHECKOUT, items="coffee")
    assert [o["product_id"] for o in checkout["offers"]] == ["press"]
    assert checkout["free_shipping"]["remaining"]["amount"] == 1800
    # Quantities count: three bags of coffee reach $36, above the threshold.
    three = [CartItem(product_id="coffee", quantity=3)]
    above = await answer(engine, record, surface=Surface.CART, items=three)
    assert "free_shipping" not in above
    assert all(o["reason"] != FREE_SHIPPING_REASON for o in above["offers"])
    at = await answer(
        engine, record, surface=Surface.CART, items=[CartItem(product_id="coffee", price=3000)]
    )
    assert "free_shipping" not in at


async def test_cached_cart_answers_follow_the_subtotal(store: Store) -> None:
    record = await shop(store, free_shipping_threshold=5000)
    engine = Engine(store)

    async def remaining(quantity: int, price: int | None = None) -> int | None:
        items = [CartItem(product_id="coffee", quantity=quantity, price=price)]
        body = await answer(engine, record, surface=Surface.CART, items=items)
        return body.get("free_shipping", {}).get("remaining", {}).get("amount")

    # The same product in each cart: every answer is cached under its anchors, and still
    # follows the quantities and the prices sent.
    assert await remaining(1) == 3800
    assert await remaining(2) == 2600
    assert await remaining(1) == 3800
    assert await remaining(1, price=1000) == 4000
    assert await remaining(5) is None
    assert await remaining(2) == 2600


async def test_no_threshold_no_free_shipping_and_no_holdout_gap(store: Store) -> None:
    record = await shop(store)
    engine = Engine(store)
    body = await answer(engine, record, surface=Surface.CART, items="coffee")
    assert "free_shipping" not in body
    record = await shop(store, free_shipping_threshold=5000, holdout_share=1.0)
    body = await answer(engine, record, surface=Surface.CART, items="coffee", visitor_id="v")
    assert body["holdout"] is True and "free_shipping" not in body


async def test_declining_a_bundle_declines_the_set_not_the_viewed_product(store: Store) -> None:
    record = await shop(store)
    engine = Engine(store)
    page = await answer(
        engine, record, surface=Surface.PRODUCT_PAGE, product_id="camera", visitor_id="v-no"
    )
    (bundle,) = [o for o in page["offers"] if o["kind"] == "bundle"]
    await decline(engine, record, bundle["token"], "v-no")
    state = await store.visitor_state(record.id, "v-no", None, 0)
    assert state.declined == frozenset({bundle_signal("camera")})
    again = await answer(
        engine, record, surface=Surface.PRODUCT_PAGE, product_id="camera", visitor_id="v-no"
    )
    assert not any(o["kind"] == "bundle" for o in again["offers"])
    assert sorted(o["product_id"] for o in again["offers"]) == ["battery", "cap", "sd-128"]
