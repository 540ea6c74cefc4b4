"""The engine's per-process copy of catalog products: read once per store version, so an answer
that misses the prepared-offer cache reads only the candidates this process has not met; and a
prepared offer list, which signs an offer's token only once an answer shows it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from offer_service.domain.policy import StoreRules
from offer_service.domain.products import Product
from offer_service.domain.records import EMPTY_VISITOR
from offer_service.domain.surfaces import Surface
from offer_service.serving import engine as engine_module
from offer_service.serving.engine import Engine
from offer_service.storage.sqlite.store import SQLiteStore
from offer_service.web.models import OffersRequest
from tests.storage.test_storage_contract import product


class CountingStore(SQLiteStore):
    """The real SQLite store, counting the product ids it is asked for."""

    asked: list[str]

    async def get_products(self, store_id: str, ids: Collection[str]) -> dict[str, Product]:
        self.asked.extend(sorted(ids))
        return await super().get_products(store_id, ids)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CountingStore]:
    s = CountingStore(str(tmp_path / "shop.db"))
    s.asked = []
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.mark.anyio
async def test_products_are_read_once_until_the_catalog_changes(store: CountingStore) -> None:
    record = await store.create_store("Shop")
    await store.upsert_products(record.id, [product("p1"), product("p2")])
    engine = Engine(store)

    first = await engine.products(record.id, ["p1", "p2", "missing"])
    assert sorted(first) == ["p1", "p2"]
    assert store.asked == ["missing", "p1", "p2"]

    again = await engine.products(record.id, ["p2", "p1"])
    assert again == {"p2": first["p2"], "p1": first["p1"]}
    assert store.asked == ["missing", "p1", "p2"]  # nothing read again
    # An id the store does not have is asked for again: it may be imported any moment.
    await engine.products(record.id, ["missing"])
    assert store.asked[-1] == "missing"

    # A catalog write bumps the store's version: the next read sees the new product.
    await store.upsert_products(record.id, [product("p1", title="Renamed")])
    await engine.changed(record)
    renamed = await engine.products(record.id, ["p1", "p2"])
    assert renamed["p1"].title == "Renamed"
    assert store.asked[-2:] == ["p1", "p2"]


@pytest.mark.anyio
async def test_the_copy_is_bounded(store: CountingStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "PRODUCTS_MAX", 3)
    record = await store.create_store("Shop")
    await store.upsert_products(record.id, [product(f"p{i}") for i in range(5)])
    engine = Engine(store)

    await engine.products(record.id, ["p0", "p1"])
    # Over the bound: the copy starts again, and the answer still has the product held before.
    both = await engine.products(record.id, ["p0", "p2", "p3"])
    assert sorted(both) == ["p0", "p2", "p3"]
    store.asked.clear()
    assert sorted(await engine.products(record.id, ["p2", "p3"])) == ["p2", "p3"]
    assert store.asked == []  # the newest reads stay held
    assert sorted(await engine.products(record.id, ["p0", "p2"])) == ["p0", "p2"]
    assert store.asked == ["p0"]


@pytest.mark.anyio
async def test_a_prepared_list_signs_only_the_offers_answers_show(store: CountingStore) -> None:
    record = await store.create_store("Shop", rules=StoreRules(holdout_share=0))
    extras = [product(f"x{i}", price=1000 + i) for i in range(6)]
    anchor = replace(product("cam", price=50_000), complements=tuple(p.id for p in extras))
    await store.upsert_products(record.id, [anchor, *extras])
    engine = Engine(store)

    async def answer(limit: int) -> list[dict[str, object]]:
        request = OffersRequest(surface=Surface.PRODUCT_PAGE, product_id="cam", limit=limit)
        offers: list[dict[str, object]] = orjson.loads(await engine.offers(record, request, "r"))[
            "offers"
        ]
        return offers

    two = await answer(2)
    (prepared,) = [v for v, _ in engine._prepared._entries.values()]
    assert len(prepared.offers) == 6
    assert [f is not None for f in prepared.fragments] == [True, True] + [False] * 4
    # A longer answer renders the next offers; those shown before keep their ids and tokens.
    four = await answer(4)
    assert [f is not None for f in prepared.fragments] == [True] * 4 + [False] * 2
    assert four[:2] == two
    assert len({o["token"] for o in four}) == 4


@pytest.mark.anyio
async def test_exploring_answers_for_visitors_without_history_are_chosen_once(
    store: CountingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = await store.create_store("Shop", rules=StoreRules(holdout_share=0))
    extras = [product(f"x{i}", price=1000 + i) for i in range(8)]
    anchor = replace(product("cam", price=50_000), complements=tuple(p.id for p in extras))
    await store.upsert_products(record.id, [anchor, *extras])
    engine = Engine(store)
    finished: list[bool] = []
    finish = engine_module.decide.finish

    def counted(*args: object, **kwargs: Any) -> list[int]:
        finished.append(kwargs["explore"])
        return finish(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(engine_module.decide, "finish", counted)
    coin = [False]
    monkeypatch.setattr(engine, "explores", lambda rules: coin[0])

    async def answer(visitor: str, exclude: list[str] | None = None) -> list[str]:
        request = OffersRequest(
            surface=Surface.PRODUCT_PAGE,
            product_id="cam",
            limit=3,
            visitor_id=visitor,
            exclude=exclude or [],
        )
        body = orjson.loads(await engine.offers(record, request, "r"))
        return [o["product_id"] for o in body["offers"]]

    plain = [await answer(f"v{i}") for i in range(3)]
    coin[0] = True
    exploring = [await answer(f"w{i}") for i in range(3)]
    assert finished == [False, True]  # once per variant, whoever asks next
    assert plain[0] == plain[1] == plain[2] and exploring[0] == exploring[1] == exploring[2]
    (prepared,) = [v for v, _ in engine._prepared._entries.values()]
    uncached = finish(
        prepared.offers,
        EMPTY_VISITOR,
        record.rules,
        limit=3,
        surface=Surface.PRODUCT_PAGE,
        now_ms=0,
        explore=True,
    )
    assert exploring[0] == [prepared.offers[i].candidate.product.id for i in uncached]
    # A visitor who excludes an offer is still decided on their own.
    assert await answer("w9", exclude=[exploring[0][0]]) != exploring[0]
    assert finished == [False, True, True]
