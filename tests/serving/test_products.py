"""The per-process copy of catalog products: read once per store version, so an answer that
misses the prepared-offer cache reads only the candidates this process has not met."""

from __future__ import annotations

import pytest

from offer_service.serving.engine import Engine
from offer_service.serving.limits import CacheLimits
from tests.serving.conftest import CountingStore
from tests.storage.test_storage_contract import product


@pytest.mark.anyio
async def test_products_are_read_once_until_the_catalog_changes(store: CountingStore) -> None:
    record = await store.create_store("Shop")
    await store.upsert_products(record.id, [product("p1"), product("p2")])
    engine = Engine(store)

    first = await engine.products.get(record.id, ["p1", "p2", "missing"])
    assert sorted(first) == ["p1", "p2"]
    assert store.asked == ["missing", "p1", "p2"]

    again = await engine.products.get(record.id, ["p2", "p1"])
    assert again == {"p2": first["p2"], "p1": first["p1"]}
    assert store.asked == ["missing", "p1", "p2"]  # nothing read again
    # An id the store does not have is asked for again: it may be imported any moment.
    await engine.products.get(record.id, ["missing"])
    assert store.asked[-1] == "missing"

    # A catalog write bumps the store's version: the next read sees the new product.
    await store.upsert_products(record.id, [product("p1", title="Renamed")])
    await engine.changed(record)
    renamed = await engine.products.get(record.id, ["p1", "p2"])
    assert renamed["p1"].title == "Renamed"
    assert store.asked[-2:] == ["p1", "p2"]


@pytest.mark.anyio
async def test_the_copy_is_bounded(store: CountingStore) -> None:
    record = await store.create_store("Shop")
    await store.upsert_products(record.id, [product(f"p{i}") for i in range(5)])
    engine = Engine(store, limits=CacheLimits(products=3))

    await engine.products.get(record.id, ["p0", "p1"])
    # Over the bound: the copy starts again, and the answer still has the product held before.
    both = await engine.products.get(record.id, ["p0", "p2", "p3"])
    assert sorted(both) == ["p0", "p2", "p3"]
    store.asked.clear()
    assert sorted(await engine.products.get(record.id, ["p2", "p3"])) == ["p2", "p3"]
    assert store.asked == []  # the newest reads stay held
    assert sorted(await engine.products.get(record.id, ["p0", "p2"])) == ["p0", "p2"]
    assert store.asked == ["p0"]
