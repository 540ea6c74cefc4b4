"""Redeeming on every backend (SQLite, Redis, Redis Cluster): the first answer of a cart and token
holds after the product changed, and a bundle answers its items at the bundle's price."""

from __future__ import annotations

import dataclasses

import pytest

from offer_service.commerce.redeem import redeem
from offer_service.domain.products import Product
from offer_service.domain.tokens import BundleItem
from offer_service.storage.protocols import Store
from tests.commerce.test_redeem import offer_token
from tests.storage.test_storage_contract import new_store, store

__all__ = ["store"]

pytestmark = pytest.mark.anyio

LENS = Product(id="lens", title="Lens", price=20000, inventory=2)
CAP = Product(id="cap", title="Lens cap", price=900)


async def test_a_cart_keeps_its_price_and_a_bundle_its_items(store: Store) -> None:
    record = await new_store(store)
    await store.upsert_products(record.id, [LENS, CAP])
    key = record.signing_keys[0]
    single = offer_token(record.id, key, "lens", 20000, pct=10, surface="cart")
    items = [BundleItem("lens", 20000, 18000), BundleItem("cap", 900, 810)]
    bundle = offer_token(record.id, key, "lens", 20900, items=items, offer_price=18810)
    first = await redeem(store, record, "cart-1", [single, bundle])
    assert [(ln["token_index"], ln["product_id"], ln["offer_price"]["amount"]) for ln in first] == [
        (0, "lens", 18000),
        (1, "lens", 18000),
        (1, "cap", 810),
    ]
    assert sum(ln["offer_price"]["amount"] for ln in first[1:]) == 18810
    # The lens is sold out and repriced: the cart that took the offers keeps them.
    await store.upsert_products(record.id, [dataclasses.replace(LENS, price=21000, inventory=0)])
    assert await redeem(store, record, "cart-1", [single, bundle]) == first
    other = await redeem(store, record, "cart-2", [single, bundle])
    assert [(ln["code"], ln["product_id"]) for ln in other] == [
        ("out_of_stock", "lens"),
        ("out_of_stock", "lens"),
    ]
