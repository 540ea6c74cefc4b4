"""A shop for the journey tests: a camera with its accessories, coffee and a cleaning kit that
run out, served by a real uvicorn server on SQLite whose public URL is https."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from offer_service.domain.policy import RateLimits, StoreRules
from offer_service.domain.records import StoreRecord
from offer_service.settings import Settings
from offer_service.storage import open_store
from tests.conftest import LiveServer, run_server

PUBLIC_URL = "https://offers.test"
SHOP = "https://shop.example"
PLACED = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)


def product(pid: str, title: str, price: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": pid,
        "title": title,
        "url": f"/products/{pid}",
        "image_url": f"{SHOP}/img/{pid}.jpg",
        "price": price,
        "currency": "USD",
        "category": extra.pop("category", "camera-accessories"),
        **extra,
    }


ACCESSORIES = ["sd-128", "bag", "lens-cap", "strap", "tripod", "battery", "flash", "filter"]
MORE = ["remote", "hood", "case", "cable", "charger", "grip"]
CATALOG = [
    product(
        "cam", "Camera X100", 50000, category="cameras", complements=[*ACCESSORIES, *MORE, "kit"]
    ),
    product("sd-128", "128 GB SD card", 3000),
    product("bag", "Camera bag", 4000),
    product("lens-cap", "52 mm lens cap", 1000),
    product("strap", "Leather strap", 1500),
    product("tripod", "Travel tripod", 6000),
    product("battery", "Spare battery", 3500),
    product("flash", "Mini flash", 9000),
    product("filter", "UV filter", 2500),
    product("remote", "Remote shutter", 2000),
    product("hood", "Lens hood", 1600),
    product("case", "Hard case", 7000),
    product("cable", "USB-C cable", 1100),
    product("charger", "Dual charger", 3900),
    product("grip", "Hand grip", 2200),
    product("kit", "Lens cleaning kit", 1300, flags=["consumable"], replenish_days=30),
    product(
        "coffee",
        "House blend coffee",
        1200,
        category="coffee",
        flags=["consumable"],
        replenish_days=21,
        complements=["mug"],
    ),
    product("mug", "Travel mug", 1800, category="coffee"),
]


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def at(**delta: float) -> str:
    """PLACED plus a delta, as the `at` of a request."""
    return iso(PLACED + timedelta(**delta))


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[tuple[LiveServer, StoreRecord]]:
    yield from serve_shop(f"sqlite:///{tmp_path}/offers.db")


def serve_shop(
    store_url: str, public_url: str | None = PUBLIC_URL
) -> Iterator[tuple[LiveServer, StoreRecord]]:
    """A real server on `store_url` with the shop's store and catalog in it."""
    settings = Settings(store_url=store_url, public_url=public_url)
    for live in run_server(settings):
        rules = StoreRules(
            storefront_url=SHOP,
            holdout_share=0,
            rate_limits=RateLimits(
                browser_per_second=1e6, browser_burst=10**6, admin_per_second=1e6, admin_burst=10**6
            ),
        )
        record = live.create_store("Field & Kettle", rules=rules)
        with live.client() as c:
            r = c.put("/v1/admin/catalog", json=CATALOG, headers=admin(record))
            assert r.status_code == 200 and r.json()["rejected"] == [], r.text
        yield live, record


def admin(record: StoreRecord) -> dict[str, str]:
    return {"Authorization": f"Bearer {record.secret_key}"}


def place(
    c: httpx.Client,
    record: StoreRecord,
    order_id: str,
    products: list[str],
    *,
    placed: datetime = PLACED,
    customer_id: str | None = "c-1",
) -> None:
    prices = {p["id"]: p["price"] for p in CATALOG}
    order: dict[str, Any] = {
        "id": order_id,
        "placed_at": iso(placed),
        "currency": "USD",
        "lines": [{"product_id": p, "quantity": 1, "price": prices[p]} for p in products],
    }
    if customer_id:
        order["customer_id"] = customer_id
    r = c.post("/v1/admin/orders", json=[order], headers=admin(record))
    assert r.status_code == 200 and r.json()["imported"] == 1, r.text


def lifecycle(
    c: httpx.Client, record: StoreRecord, order_id: str, kind: str, when: str, **extra: Any
) -> dict[str, Any]:
    r = c.post(
        f"/v1/admin/orders/{order_id}/events",
        json={"type": kind, "at": when, **extra},
        headers=admin(record),
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def journey(c: httpx.Client, record: StoreRecord, order_id: str, when: str) -> dict[str, Any]:
    r = c.get(f"/v1/journeys/{order_id}", params={"at": when}, headers=admin(record))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def touchpoints(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """By name (the first of a repeated name)."""
    out: dict[str, dict[str, Any]] = {}
    for t in body["touchpoints"]:
        out.setdefault(t["name"], t)
    return out


def offered(t: dict[str, Any]) -> list[str]:
    return [o["product_id"] for o in t["offers"]]


def consent(
    c: httpx.Client, record: StoreRecord, customer_id: str, status: str, when: str, **extra: Any
) -> httpx.Response:
    return c.post(
        f"/v1/admin/customers/{customer_id}/sms-consent",
        json={"status": status, "at": when, **extra},
        headers=admin(record),
    )


def with_store(live: LiveServer, fn: Any) -> Any:
    """Run `fn(store)` against the server's own store file (for state the API does not set)."""

    async def run() -> Any:
        store = open_store(live.store_url)
        await store.open()
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(run())
