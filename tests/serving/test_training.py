"""Training the item model from a real store: the lists it writes, and what it says without data."""

from __future__ import annotations

import orjson
import pytest

from offer_service.commerce.ingest import import_orders
from offer_service.decision import ease
from offer_service.domain.policy import StoreRules
from offer_service.domain.surfaces import Surface
from offer_service.serving import training
from offer_service.serving.engine import Engine
from offer_service.serving.training import train_store
from offer_service.web.models import OffersRequest
from tests.serving.conftest import CountingStore
from tests.storage.test_storage_contract import order, product

DAY = 86_400_000


async def offer_ids(engine: Engine, store: CountingStore, product_id: str) -> list[str]:
    record = await store.get_store("st_shop")
    assert record is not None
    request = OffersRequest(surface=Surface.PRODUCT_PAGE, product_id=product_id, limit=3)
    body = orjson.loads(await engine.offers(record, request, "r"))
    # Each offer's product, or a bundle's complements (its first item is the page's product).
    return [
        pid
        for o in body["offers"]
        for pid in (
            [i["product_id"] for i in o["items"][1:]] if "items" in o else [o["product_id"]]
        )
    ]


async def shop(store: CountingStore) -> None:
    record = await store.create_store("Shop", store_id="st_shop", rules=StoreRules(holdout_share=0))
    await store.upsert_products(
        record.id, [product(p, category="gifts") for p in ("a", "b", "c", "d", "e")]
    )


@pytest.mark.anyio
async def test_an_empty_store_says_so_and_keeps_its_best_sellers(store: CountingStore) -> None:
    await shop(store)
    record = await store.get_store("st_shop")
    assert record is not None
    said: list[str] = []
    summary = await train_store(store, record, progress=said.append)
    assert summary.products == 0 and summary.lam is None
    assert any("no order of two or more products" in line for line in said)
    assert any("best sellers" in line for line in said)


@pytest.mark.anyio
async def test_one_order_is_nothing_to_learn_and_best_sellers_still_serve(
    store: CountingStore,
) -> None:
    await shop(store)
    record = await store.get_store("st_shop")
    assert record is not None
    await import_orders(store, record, [order("o1", ["a"])], [])
    await import_orders(store, record, [order("o2", ["b"]), order("o3", ["b"])], [])
    said: list[str] = []
    summary = await train_store(store, record, progress=said.append)
    assert summary.products == 0 and summary.baskets == 3
    assert any("no order of two or more products" in line for line in said)
    # The fallback: same-category best sellers for a product no basket relates to anything.
    assert await offer_ids(Engine(store), store, "a") == ["b"]


@pytest.mark.anyio
async def test_training_writes_scored_lists_that_orders_then_leave_alone(
    store: CountingStore,
) -> None:
    await shop(store)
    record = await store.get_store("st_shop")
    assert record is not None
    baskets = [["a", "b"], ["a", "b", "c"], ["c", "d"], ["a", "b"], ["d", "e"], ["c", "d"]]
    orders = [order(f"o{i}", b, at_ms=1_700_000_000_000 + i * DAY) for i, b in enumerate(baskets)]
    await import_orders(store, record, orders, [])
    said: list[str] = []
    summary = await train_store(store, record, progress=said.append)
    assert summary.products == 5
    assert summary.lam is not None
    assert any(line.startswith("fitting 5 products") for line in said)
    (top, *_) = await store.neighbors(record.id, "a", 5)
    assert top.product_id == "b" and top.pair_count == 3
    assert top.score is not None and top.score > 0
    assert (await offer_ids(Engine(store), store, "a"))[0] == "b"

    # A new order counts at once but does not replace the model's list (only the next fit does);
    # a product the model has not seen gets a co-occurrence list meanwhile.
    await store.upsert_products(record.id, [product("f", category="gifts")])
    await import_orders(store, record, [order("o9", ["a", "e", "f"])], [])
    assert (await store.neighbors(record.id, "a", 5))[0] == top
    assert await store.basket_count(record.id) == len(baskets) + 1
    assert (await store.pair_counts(record.id, "f"))[0].pair_count == 1


@pytest.mark.anyio
async def test_training_reads_the_catalogs_titles_in_chunks(
    store: CountingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two bags named alike are never bought together until the last month, which validation
    # reads: only their titles can predict it, so the title weight is chosen and the served
    # list of one names the other.
    monkeypatch.setattr(training, "TITLE_CHUNK", 7)  # several reads for the 42 products
    record = await store.create_store("Shop", store_id="st_shop", rules=StoreRules(holdout_share=0))
    fillers = [f"z{i:02d}" for i in range(40)]
    await store.upsert_products(
        record.id,
        [
            product("red", title="Red Retrospot Jumbo Bag"),
            product("pink", title="Pink Retrospot Jumbo Bag"),
            *(product(z, title=f"filler item {z}") for z in fillers),
        ],
    )
    start = 1_700_000_000_000
    orders = [
        order(f"o{i}", [("red", "pink")[i % 2], fillers[i % 40], fillers[(i * 7 + 1) % 40]],
              at_ms=start + i * DAY // 4)
        for i in range(240)
    ]  # fmt: skip
    orders += [order(f"v{i}", ["red", "pink"], at_ms=start + 70 * DAY + i) for i in range(30)]
    await import_orders(store, record, orders, [])
    said: list[str] = []
    summary = await train_store(store, record, progress=said.append)
    assert summary.products == 42
    chosen = next(line for line in said if line.startswith("chosen:"))
    assert "title weight 0," not in chosen and summary.title_weight > 0
    assert summary.report()["title_weight"] == summary.title_weight
    listed = {pc.product_id for pc in await store.neighbors(record.id, "red", 25) if pc.score}
    assert "pink" in listed
    assert sorted(set(store.asked)) == sorted(["red", "pink", *fillers])
    # A catalog too large for the exact model: its titles are not read at all.
    store.asked.clear()
    monkeypatch.setattr(ease, "DENSE_MAX", 41)
    summary = await train_store(store, record)
    assert store.asked == [] and summary.title_weight == 0.0
