"""The demo store's offers fit what its shopper is buying."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from offer_service.domain.surfaces import Surface
from offer_service.serving.engine import Engine
from offer_service.storage.sqlite.store import SQLiteStore
from offer_service.web.models import CartItem, OffersRequest
from offer_service_tools.demo import CATALOG, install_demo

PRICES = {p.id: p.price for p in CATALOG}
BATTERY = "battery-np50"


@pytest.mark.anyio
async def test_the_battery_page_and_checkout_offer_what_fits_a_battery(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "demo.db"))
    await store.open()
    try:
        record = await install_demo(store)
        engine = Engine(store)

        async def offered(request: OffersRequest) -> list[dict[str, object]]:
            body = orjson.loads(await engine.offers(record, request, "r"))
            offers: list[dict[str, object]] = body["offers"]
            return offers

        page = await offered(
            OffersRequest(surface=Surface.PRODUCT_PAGE, product_id=BATTERY, limit=5)
        )
        checkout = await offered(
            OffersRequest(surface=Surface.CHECKOUT, items=[CartItem(product_id=BATTERY)])
        )
    finally:
        await store.close()
    assert page and checkout
    rules = record.rules.price_fit
    assert rules.product_page is not None and rules.cart is not None
    # What the shopper would pay is what must fit.
    for o in page:
        assert amount(o) <= rules.product_page * PRICES[BATTERY], o
    # The $1,079 camera is no last chance to add to a $34.99 battery.
    for o in checkout:
        assert amount(o) <= rules.cart * PRICES[BATTERY], o
    assert not any(str(o["product_id"]).startswith("cam-") for o in checkout)


def amount(offer: dict[str, object]) -> int:
    price = offer["offer_price"]
    assert isinstance(price, dict)
    value: int = price["amount"]
    return value


CAMERA_GEAR = {"memory", "camera-accessories", "bags", "tripods"}


@pytest.mark.anyio
async def test_the_demo_store_is_set_up_with_the_item_models_lists(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "demo.db"))
    await store.open()
    try:
        record = await install_demo(store)
        lists = await store.neighbors(record.id, BATTERY, 50)
        body = orjson.loads(
            await Engine(store).offers(
                record,
                OffersRequest(surface=Surface.PRODUCT_PAGE, product_id=BATTERY, limit=3),
                "r",
            )
        )
        # Set up again (a restart): nothing new to learn, the lists stay the model's.
        await install_demo(store)
        again = await store.neighbors(record.id, BATTERY, 50)
    finally:
        await store.close()
    assert lists and all(pc.score is not None for pc in lists)
    assert again == lists
    categories = {p.id: p.category for p in CATALOG}
    offered = [o["product_id"] for o in body["offers"]]
    assert offered, body
    # A cross-sell that fits a spare battery: camera gear, never a camera.
    assert all(categories[pid] in CAMERA_GEAR for pid in offered), offered
