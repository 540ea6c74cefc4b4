"""The Store contract: every backend passes every test here, through the protocol alone.

A backend joins by adding a factory to `BACKENDS`. Tests create their own tenants with fresh
ids, so a backend may share one server between tests. Tests of the SQLite backend's own
promises (files, URLs, several processes on one file) are at the end.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from offer_service.domain.orders import Order, OrderLine, ProductReturn
from offer_service.domain.policy import FrequencyCap, StoreRules
from offer_service.domain.products import Product
from offer_service.domain.records import PairCount, StoreRecord, VisitorState
from offer_service.exceptions import StoreError
from offer_service.storage import open_store, shared_by_processes
from offer_service.storage.protocols import Store
from offer_service.storage.sqlite.store import SCHEMA_VERSION, SQLiteStore
from offer_service.types import HOUR_MS, now_ms
from tests.redis_servers import redis_backend, redis_cluster_backend

pytestmark = pytest.mark.anyio

BackendFactory = Callable[[Path], AbstractAsyncContextManager[Store]]


@asynccontextmanager
async def sqlite_backend(tmp_path: Path) -> AsyncIterator[Store]:
    store = SQLiteStore.from_url(f"sqlite:///{tmp_path}/offers.db")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


# name -> factory of an open store, closed on exit.
BACKENDS: dict[str, BackendFactory] = {
    "sqlite": sqlite_backend,
    "redis": redis_backend,
    "redis-cluster": redis_cluster_backend,
}


@pytest.fixture(params=sorted(BACKENDS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with BACKENDS[request.param](tmp_path) as opened:
        yield opened


async def new_store(store: Store, **kwargs: object) -> StoreRecord:
    return await store.create_store("Test shop", **kwargs)  # type: ignore[arg-type]


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def product(
    product_id: str,
    *,
    category: str = "misc",
    family: str | None = None,
    price: int = 1000,
    title: str | None = None,
) -> Product:
    return Product(
        id=product_id, title=title or product_id, price=price, category=category, family=family
    )


def order(
    order_id: str,
    products: list[str],
    *,
    at_ms: int = 1_700_000_000_000,
    customer: str | None = None,
    visitor: str | None = None,
) -> Order:
    return Order(
        id=order_id,
        placed_at_ms=at_ms,
        currency="USD",
        lines=tuple(OrderLine(product_id=p, quantity=1, price=500) for p in products),
        customer_id=customer,
        visitor_id=visitor,
    )


async def baskets_of(store: Store, store_id: str) -> list[frozenset[str]]:
    return [basket async for basket in store.iter_baskets(store_id)]


# tenants


async def test_create_store_generates_ids_keys_and_a_signing_key(store: Store) -> None:
    before = now_ms()
    record = await store.create_store("Camera shop")

    assert re.fullmatch(r"st_[0-9a-f]{16}", record.id)
    assert re.fullmatch(r"pk_[A-Za-z0-9_-]{24}", record.publishable_key)
    assert re.fullmatch(r"sk_[A-Za-z0-9_-]{32}", record.secret_key)
    assert re.fullmatch(r"whsec_[A-Za-z0-9_-]{32}", record.webhook_secret)
    assert record.webhook_secrets == (record.webhook_secret,)
    assert [key.kid for key in record.signing_keys] == ["k1"]
    assert len(record.signing_keys[0].secret) == 32
    assert record.name == "Camera shop"
    assert record.rules == StoreRules()
    assert before <= record.created_at_ms <= now_ms()
    assert await store.get_store(record.id) == record
    assert await store.version(record.id) >= 1


async def test_create_store_generates_different_secrets_for_each_store(store: Store) -> None:
    first, second = await new_store(store), await new_store(store)

    assert first.id != second.id
    assert first.publishable_key != second.publishable_key
    assert first.secret_key != second.secret_key
    assert first.webhook_secret != second.webhook_secret
    assert first.signing_keys[0].secret != second.signing_keys[0].secret


async def test_create_store_keeps_explicit_ids_and_keys(store: Store) -> None:
    store_id, pk, sk, whsec = unique("demo"), unique("pk_demo"), unique("sk_demo"), unique("wh_")
    rules = StoreRules(allowed_origins=["http://localhost:8000"], holdout_share=0.2)

    record = await store.create_store(
        "Demo",
        store_id=store_id,
        publishable_key=pk,
        secret_key=sk,
        webhook_secret=whsec,
        rules=rules,
    )

    assert (record.id, record.publishable_key, record.secret_key) == (store_id, pk, sk)
    assert record.webhook_secrets == (whsec,)
    assert record.rules == rules
    assert await store.get_store(store_id) == record


async def test_create_store_refuses_a_taken_id_or_key(store: Store) -> None:
    taken = await new_store(store)

    with pytest.raises(StoreError):
        await new_store(store, store_id=taken.id)
    with pytest.raises(StoreError):
        await new_store(store, publishable_key=taken.publishable_key)
    with pytest.raises(StoreError):
        await new_store(store, secret_key=taken.publishable_key)
    assert await store.get_store(taken.id) == taken


async def test_store_by_key_resolves_publishable_and_secret_keys(store: Store) -> None:
    record = await new_store(store)
    await new_store(store)

    assert await store.store_by_key(record.publishable_key) == record
    assert await store.store_by_key(record.secret_key) == record
    assert await store.store_by_key("pk_unknown") is None
    assert await store.store_by_key(record.webhook_secret) is None
    assert await store.get_store("st_unknown") is None


async def test_set_rules_persists_and_bumps_the_version(store: Store) -> None:
    record = await new_store(store)
    before = await store.version(record.id)
    rules = StoreRules(
        margin_floor=250, frequency_cap=FrequencyCap(impressions=5), charge_url="https://x.test/c"
    )

    updated = await store.set_rules(record.id, rules)

    assert updated.rules == rules
    assert updated.secret_key == record.secret_key
    assert (await store.get_store(record.id)) == updated
    assert await store.version(record.id) > before


async def test_bundle_and_free_shipping_rules_persist(store: Store) -> None:
    record = await new_store(store)
    rules = StoreRules.model_validate(
        {"bundles": False, "discounts": {"bundle": 15}, "free_shipping_threshold": 4999}
    )
    await store.set_rules(record.id, rules)
    stored = await store.get_store(record.id)
    assert stored is not None and stored.rules == rules
    assert (stored.rules.bundles, stored.rules.discounts.bundle) == (False, 15)
    assert stored.rules.free_shipping_threshold == 4999


async def test_set_rules_of_an_unknown_store_raises_store_error(store: Store) -> None:
    with pytest.raises(StoreError):
        await store.set_rules(unique("st_"), StoreRules())


async def test_version_of_an_unknown_store_is_zero(store: Store) -> None:
    assert await store.version(unique("st_")) == 0


# catalog


async def test_upsert_products_round_trips_every_field(store: Store) -> None:
    record = await new_store(store)
    full = Product(
        id="cam-x100",
        title="Camera X100 “Pro”",
        price=89900,
        currency="EUR",
        url="https://shop.example/cam",
        image_url="https://shop.example/cam.jpg",
        category="cameras",
        cost=61000,
        compare_at_price=99900,
        family="x100",
        tier=2,
        tags=("mirrorless", "4k"),
        inventory=7,
        active=False,
        complements=("sd-128", "bag-s"),
        flags=("new", "clearance"),
        replenish_days=30,
    )
    bare = Product(id="sd-128", title="SD card", price=2999)

    assert await store.upsert_products(record.id, [full, bare]) == 2
    assert await store.get_products(record.id, ["cam-x100", "sd-128"]) == {
        "cam-x100": full,
        "sd-128": bare,
    }


async def test_upsert_products_replaces_existing_ids_and_bumps_the_version(store: Store) -> None:
    record = await new_store(store)
    await store.upsert_products(record.id, [product("a", price=100), product("b")])
    before = await store.version(record.id)

    count = await store.upsert_products(
        record.id, [product("a", price=200), product("a", price=300, title="A v3")]
    )

    assert count == 2
    assert await store.version(record.id) > before
    found = await store.get_products(record.id, ["a", "b"])
    assert (found["a"].price, found["a"].title) == (300, "A v3")
    assert found["b"] == product("b")
    assert [p.id for p in await store.list_products(record.id, 10)] == ["a", "b"]


async def test_get_products_returns_only_existing_ids(store: Store) -> None:
    record = await new_store(store)
    await store.upsert_products(record.id, [product("a"), product("b"), product("c")])

    found = await store.get_products(record.id, ["c", "missing", "a"])

    assert sorted(found) == ["a", "c"]
    assert await store.get_products(record.id, []) == {}


async def test_list_products_pages_by_id_after_the_cursor(store: Store) -> None:
    record = await new_store(store)
    ids = [f"p{i:03d}" for i in range(25)]
    await store.upsert_products(record.id, [product(i) for i in reversed(ids)])

    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page = await store.list_products(record.id, 10, after=cursor)
        if not page:
            break
        pages.append([p.id for p in page])
        cursor = page[-1].id

    assert [len(page) for page in pages] == [10, 10, 5]
    assert [pid for page in pages for pid in page] == ids
    assert await store.list_products(record.id, 3, after="p010") == [
        product("p011"),
        product("p012"),
        product("p013"),
    ]


async def test_family_products_returns_every_member_of_the_family(store: Store) -> None:
    record = await new_store(store)
    await store.upsert_products(
        record.id,
        [
            product("x100-basic", family="x100"),
            product("x100-pro", family="x100"),
            product("x200", family="x200"),
            product("bag"),
        ],
    )

    members = await store.family_products(record.id, "x100")

    assert sorted(p.id for p in members) == ["x100-basic", "x100-pro"]
    assert await store.family_products(record.id, "none") == []


# orders


async def test_add_orders_is_idempotent_by_order_id(store: Store) -> None:
    record = await new_store(store)
    first = await store.add_orders(record.id, [order("o1", ["a"]), order("o2", ["b"])])

    again = await store.add_orders(
        record.id, [order("o2", ["b"]), order("o3", ["c"]), order("o3", ["c", "d"])]
    )

    assert (first.imported, first.duplicates) == (2, 0)
    assert [o.id for o in first.new_orders] == ["o1", "o2"]
    assert (again.imported, again.duplicates) == (1, 2)
    assert again.new_orders == (order("o3", ["c"]),)
    assert await store.basket_count(record.id) == 3
    assert await store.product_basket_counts(record.id, ["b", "c", "d"]) == {"b": 1, "c": 1}
    assert sorted(map(sorted, await baskets_of(store, record.id))) == [["a"], ["b"], ["c"]]


async def test_add_orders_bumps_the_version_only_when_something_is_new(store: Store) -> None:
    record = await new_store(store)
    before = await store.version(record.id)
    await store.add_orders(record.id, [order("o1", ["a"])])
    after_import = await store.version(record.id)

    counts = await store.add_orders(record.id, [order("o1", ["a"])])

    assert after_import > before
    assert (counts.imported, counts.duplicates, counts.new_orders) == (0, 1, ())
    assert await store.version(record.id) == after_import


async def test_get_order_returns_its_lines_buyer_and_status(store: Store) -> None:
    record = await new_store(store)
    placed = Order(
        id="1001",
        placed_at_ms=1_700_000_123_456,
        currency="EUR",
        lines=(
            OrderLine(product_id="cam", quantity=1, price=89900),
            OrderLine(product_id="sd", quantity=3, price=1999),
            OrderLine(product_id="cam", quantity=1, price=0),
        ),
        customer_id="cus_1",
        visitor_id="vis_1",
        status="shipped",
    )
    await store.add_orders(record.id, [placed])

    assert await store.get_order(record.id, "1001") == placed
    assert await store.get_order(record.id, "1002") is None


async def test_basket_counts_count_each_order_once_per_product(store: Store) -> None:
    record = await new_store(store)
    await store.add_orders(
        record.id,
        [
            order("o1", ["a", "a", "b"]),
            order("o2", ["a", "c"]),
            order("o3", ["b"]),
        ],
    )
    await store.add_orders(record.id, [order("o4", ["a"])])

    counts = await store.product_basket_counts(record.id, ["a", "b", "c", "zzz"])

    assert counts == {"a": 3, "b": 2, "c": 1}
    assert await store.product_basket_counts(record.id, []) == {}


async def test_basket_count_counts_only_orders_with_product_lines(store: Store) -> None:
    record = await new_store(store)
    assert await store.basket_count(record.id) == 0

    await store.add_orders(
        record.id, [order("o1", ["a"]), order("fees-only", []), order("o2", ["a", "b"])]
    )

    assert await store.basket_count(record.id) == 2
    assert sorted(map(sorted, await baskets_of(store, record.id))) == [["a"], ["a", "b"]]
    assert (await store.get_order(record.id, "fees-only")) == order("fees-only", [])


async def test_iter_baskets_yields_the_distinct_products_of_every_order(store: Store) -> None:
    record = await new_store(store)
    # More orders than any sensible page size, so paging is exercised.
    orders = [order(f"o{i:05d}", [f"p{i % 7}", f"p{i % 11}", f"p{i % 7}"]) for i in range(4321)]
    await store.add_orders(record.id, orders)

    baskets = await baskets_of(store, record.id)

    assert len(baskets) == 4321
    assert sorted(baskets, key=sorted) == sorted((o.product_ids for o in orders), key=sorted)
    assert all(isinstance(basket, frozenset) for basket in baskets)


async def test_best_sellers_rank_by_baskets_then_id(store: Store) -> None:
    record = await new_store(store)
    await store.upsert_products(
        record.id,
        [product("b", category="x"), product("a", category="y"), product("c", category="x")],
    )
    await store.add_orders(
        record.id,
        [order("o1", ["a", "b", "c"]), order("o2", ["b", "c"]), order("o3", ["c", "d"])],
    )

    assert await store.best_sellers(record.id, None, 10) == [("c", 3), ("b", 2), ("a", 1), ("d", 1)]
    assert await store.best_sellers(record.id, None, 2) == [("c", 3), ("b", 2)]
    assert await store.best_sellers(record.id, "x", 10) == [("c", 3), ("b", 2)]
    assert await store.best_sellers(record.id, "none", 10) == []


async def test_best_sellers_of_a_category_follow_catalog_changes(store: Store) -> None:
    record = await new_store(store)
    # Sold before it was in the catalog, then catalogued, then moved to another category.
    await store.add_orders(record.id, [order("o1", ["a", "b"]), order("o2", ["a"])])
    await store.upsert_products(record.id, [product("a", category="x"), product("b", category="x")])
    assert await store.best_sellers(record.id, "x", 10) == [("a", 2), ("b", 1)]

    await store.upsert_products(record.id, [product("a", category="y")])

    assert await store.best_sellers(record.id, "x", 10) == [("b", 1)]
    assert await store.best_sellers(record.id, "y", 10) == [("a", 2)]


async def test_purchases_are_kept_for_customer_and_visitor_with_the_latest_time(
    store: Store,
) -> None:
    record = await new_store(store)
    await store.add_orders(
        record.id,
        [
            order("o1", ["a", "b"], at_ms=1_000, customer="cus", visitor="v1"),
            order("o2", ["a"], at_ms=3_000, customer="cus", visitor="v2"),
            order("o3", ["c"], at_ms=2_000, visitor="v1"),
        ],
    )
    # An older order imported later does not move "last purchased" back.
    await store.add_orders(record.id, [order("o0", ["a"], at_ms=500, customer="cus")])

    by_customer = await store.visitor_state(record.id, None, "cus", since_ms=0)
    by_visitor = await store.visitor_state(record.id, "v1", None, since_ms=0)
    both = await store.visitor_state(record.id, "v1", "cus", since_ms=0)

    assert by_customer.purchased == {"a": 3_000, "b": 1_000}
    assert by_visitor.purchased == {"a": 1_000, "b": 1_000, "c": 2_000}
    assert both.purchased == {"a": 3_000, "b": 1_000, "c": 2_000}
    assert (await store.visitor_state(record.id, "v3", "other", 0)).purchased == {}


# returns


async def test_add_returns_marks_products_returned_for_the_customer_and_the_buyer(
    store: Store,
) -> None:
    record = await new_store(store)
    await store.add_orders(record.id, [order("o1", ["a", "b"], customer="cus", visitor="vis")])

    recorded = await store.add_returns(
        record.id,
        [
            ProductReturn(product_ids=("a",), at_ms=5_000, order_id="o1"),
            ProductReturn(product_ids=("z",), at_ms=6_000, customer_id="other"),
        ],
    )

    assert recorded == 2
    assert (await store.visitor_state(record.id, None, "cus", 0)).returned == {"a"}
    assert (await store.visitor_state(record.id, "vis", None, 0)).returned == {"a"}
    assert (await store.visitor_state(record.id, None, "other", 0)).returned == {"z"}
    assert (await store.get_order(record.id, "o1")).status == "placed"  # type: ignore[union-attr]


async def test_a_return_of_every_product_marks_the_order_returned(store: Store) -> None:
    record = await new_store(store)
    await store.add_orders(
        record.id, [order("o1", ["a", "b", "a"]), order("o2", ["a", "b"]), order("o3", ["c"])]
    )

    await store.add_returns(
        record.id,
        [
            ProductReturn(product_ids=("a", "b"), at_ms=1, order_id="o1"),
            ProductReturn(product_ids=("a",), at_ms=1, order_id="o2"),
        ],
    )
    statuses = [(await store.get_order(record.id, o)).status for o in ("o1", "o2", "o3")]  # type: ignore[union-attr]
    assert statuses == ["returned", "placed", "placed"]

    # Returns add up: the rest of o2 comes back later.
    await store.add_returns(record.id, [ProductReturn(product_ids=("b",), at_ms=2, order_id="o2")])

    returned = await store.get_order(record.id, "o2")
    assert returned is not None
    assert returned.status == "returned"
    assert returned.lines == order("o2", ["a", "b"]).lines


async def test_add_returns_skips_a_return_with_nobody_to_attach_it_to(store: Store) -> None:
    record = await new_store(store)
    before = await store.version(record.id)

    recorded = await store.add_returns(
        record.id, [ProductReturn(product_ids=("a",), at_ms=1, order_id="never-sent")]
    )

    assert recorded == 0
    assert await store.version(record.id) == before


async def test_add_returns_bumps_the_version(store: Store) -> None:
    record = await new_store(store)
    before = await store.version(record.id)

    await store.add_returns(
        record.id, [ProductReturn(product_ids=("a",), at_ms=1, customer_id="c")]
    )

    assert await store.version(record.id) > before


# affinity


async def test_add_pair_counts_accumulates_undirected_counts(store: Store) -> None:
    record = await new_store(store)

    await store.add_pair_counts(record.id, {("a", "b"): 2, ("a", "c"): 1})
    await store.add_pair_counts(record.id, {("a", "b"): 3, ("b", "c"): 4})

    assert await store.pair_counts(record.id, "a") == [PairCount("b", 5), PairCount("c", 1)]
    assert await store.pair_counts(record.id, "b") == [PairCount("a", 5), PairCount("c", 4)]
    assert await store.pair_counts(record.id, "c") == [PairCount("b", 4), PairCount("a", 1)]
    assert await store.pair_counts(record.id, "unknown") == []


async def test_pair_counts_lists_partners_from_either_side_best_first(store: Store) -> None:
    record = await new_store(store)
    await store.replace_pair_counts(
        record.id, [("a", "m", 2), ("m", "z", 7), ("b", "m", 2), ("a", "z", 1)]
    )

    assert await store.pair_counts(record.id, "m") == [
        PairCount("z", 7),
        PairCount("a", 2),
        PairCount("b", 2),
    ]


async def test_replace_pair_counts_replaces_every_pair_of_the_store(store: Store) -> None:
    record = await new_store(store)
    await store.add_pair_counts(record.id, {("a", "b"): 9, ("c", "d"): 9})
    before = await store.version(record.id)

    await store.replace_pair_counts(record.id, iter([("a", "b", 2), ("b", "c", 3)]))

    assert await store.pair_counts(record.id, "a") == [PairCount("b", 2)]
    assert await store.pair_counts(record.id, "b") == [PairCount("c", 3), PairCount("a", 2)]
    assert await store.pair_counts(record.id, "d") == []
    assert await store.version(record.id) > before


async def test_replace_pair_counts_streams_a_large_generator(store: Store) -> None:
    record = await new_store(store)
    ids = [f"p{i:03d}" for i in range(400)]

    await store.replace_pair_counts(
        record.id,
        ((ids[i], ids[j], i + j) for i in range(len(ids)) for j in range(i + 1, len(ids))),
    )

    partners = await store.pair_counts(record.id, "p007")
    assert len(partners) == 399
    assert partners[0] == PairCount("p399", 406)
    assert partners[-1] == PairCount("p000", 7)


async def test_set_neighbors_replaces_the_listed_products_only(store: Store) -> None:
    record = await new_store(store)
    await store.set_neighbors(
        record.id, {"a": [PairCount("b", 5), PairCount("c", 2)], "x": [PairCount("y", 1)]}
    )
    before = await store.version(record.id)

    await store.set_neighbors(record.id, {"a": [PairCount("d", 9), PairCount("b", 5)]})

    assert await store.neighbors(record.id, "a", 10) == [PairCount("d", 9), PairCount("b", 5)]
    assert await store.neighbors(record.id, "x", 10) == [PairCount("y", 1)]
    assert await store.neighbors(record.id, "unknown", 10) == []
    assert await store.version(record.id) > before


async def test_neighbors_keeps_rank_order_and_respects_the_limit(store: Store) -> None:
    record = await new_store(store)
    # Rank order is the caller's, even where it disagrees with the counts.
    ranked = [PairCount("z", 1), PairCount("a", 8), PairCount("m", 3), PairCount("b", 3)]
    await store.set_neighbors(record.id, {"p": ranked})

    assert await store.neighbors(record.id, "p", 10) == ranked
    assert await store.neighbors(record.id, "p", 2) == ranked[:2]


async def test_candidate_sources_read_together_what_the_single_reads_give(store: Store) -> None:
    record = await new_store(store)
    await store.upsert_products(
        record.id,
        [
            product("cam", category="cameras", family="cam"),
            product("cam-pro", category="cameras", family="cam"),
            product("bag", category="bags", family="bag"),
            product("strap", category="bags"),
            product("card", category="memory"),
        ],
    )
    await store.add_orders(
        record.id,
        [order("o1", ["cam", "bag", "card"]), order("o2", ["cam", "strap"]), order("o3", ["bag"])],
    )
    ranked = [PairCount("bag", 5), PairCount("card", 3), PairCount("strap", 1)]
    await store.set_neighbors(record.id, {"cam": ranked, "bag": [PairCount("cam", 5)]})
    anchors, families = ["cam", "bag", "unknown"], ["cam", "bag", "none"]
    categories = ["cameras", "bags", "none"]

    got = await store.candidate_sources(
        record.id, anchors, families, categories, neighbors=2, best_sellers=1
    )

    assert got.neighbors == {a: await store.neighbors(record.id, a, 2) for a in anchors}
    assert got.neighbors["cam"] == ranked[:2]
    assert got.family_members == {f: await store.family_products(record.id, f) for f in families}
    assert [p.id for p in got.family_members["cam"]] == ["cam", "cam-pro"]
    assert got.best_sellers == {c: await store.best_sellers(record.id, c, 1) for c in categories}
    assert got.best_sellers["bags"] == [("bag", 2)]
    assert got.basket_total == await store.basket_count(record.id) == 3
    counted = {"cam", "bag", "unknown", "card"}  # the anchors and their neighbours
    assert got.basket_counts == await store.product_basket_counts(record.id, counted)
    assert got.basket_counts == {"cam": 2, "bag": 2, "card": 1}
    # Nothing asked, nothing read; a limit of 0 reads no list.
    empty = await store.candidate_sources(record.id, [], [], [], neighbors=0, best_sellers=0)
    assert (empty.neighbors, empty.family_members, empty.best_sellers) == ({}, {}, {})
    assert empty.basket_counts == {}
    assert empty.basket_total == 3
    none = await store.candidate_sources(
        record.id, ["cam"], [], ["bags"], neighbors=0, best_sellers=0
    )
    assert none.neighbors == {"cam": []} and none.best_sellers == {"bags": []}


# per-visitor state


async def test_visitor_state_without_ids_is_empty(store: Store) -> None:
    record = await new_store(store)
    await store.add_orders(record.id, [order("o1", ["a"], customer="c", visitor="v")])

    state = await store.visitor_state(record.id, None, None, 0)

    assert state == VisitorState()


async def test_visitor_state_reads_declines_and_accepts(store: Store) -> None:
    record = await new_store(store)
    await store.record_visitor_signal(record.id, "v1", "a", "decline", 1_000)
    await store.record_visitor_signal(record.id, "v1", "b", "accept", 2_000)
    await store.record_visitor_signal(record.id, "v1", "b", "accept", 3_000)
    await store.record_visitor_signal(record.id, "v2", "c", "decline", 1_000)

    state = await store.visitor_state(record.id, "v1", None, since_ms=0)

    assert state.declined == {"a"}
    assert state.accepted == {"b"}
    assert (await store.visitor_state(record.id, "v2", "c1", 0)).declined == {"c"}


async def test_impressions_count_since_the_window_start_and_after_the_last_click(
    store: Store,
) -> None:
    record = await new_store(store)
    signals = [
        ("a", "impression", 100),  # before the window
        ("a", "impression", 2_000),
        ("a", "impression", 3_000),
        ("b", "impression", 2_000),
        ("b", "click", 2_500),  # b was clicked: earlier impressions no longer count
        ("b", "impression", 2_600),
        ("c", "impression", 1_500),
        ("c", "click", 1_600),
    ]
    for product_id, kind, at_ms in signals:
        await store.record_visitor_signal(record.id, "v1", product_id, kind, at_ms)  # type: ignore[arg-type]

    state = await store.visitor_state(record.id, "v1", None, since_ms=1_000)

    assert state.impressions == {"a": 2, "b": 1}
    assert state.declined == set()


async def test_visitor_state_combines_customer_and_visitor_history(store: Store) -> None:
    record = await new_store(store)
    t = now_ms()
    await store.add_orders(record.id, [order("o1", ["bought"], at_ms=t, customer="cus")])
    await store.add_returns(
        record.id, [ProductReturn(product_ids=("sent-back",), at_ms=t, customer_id="cus")]
    )
    await store.record_visitor_signal(record.id, "vis", "no-thanks", "decline", t)
    await store.record_visitor_signal(record.id, "vis", "seen", "impression", t)

    state = await store.visitor_state(record.id, "vis", "cus", since_ms=t - 24 * HOUR_MS)

    assert state.purchased == {"bought": t}
    assert state.returned == {"sent-back"}
    assert state.declined == {"no-thanks"}
    assert state.impressions == {"seen": 1}


# tenancy


async def test_stores_never_see_each_others_data(store: Store) -> None:
    mine, theirs = await new_store(store), await new_store(store)
    await store.upsert_products(mine.id, [product("p1", category="x", family="f")])
    await store.add_orders(mine.id, [order("o1", ["p1", "p2"], customer="c", visitor="v")])
    await store.add_returns(mine.id, [ProductReturn(product_ids=("p1",), at_ms=1, order_id="o1")])
    await store.add_pair_counts(mine.id, {("p1", "p2"): 1})
    await store.set_neighbors(mine.id, {"p1": [PairCount("p2", 1)]})
    await store.record_visitor_signal(mine.id, "v", "p1", "decline", 1)
    await store.record_visitor_signal(mine.id, "v", "p2", "impression", 1)
    theirs_version = await store.version(theirs.id)

    assert await store.get_products(theirs.id, ["p1"]) == {}
    assert await store.list_products(theirs.id, 10) == []
    assert await store.family_products(theirs.id, "f") == []
    assert await store.best_sellers(theirs.id, None, 10) == []
    assert await store.best_sellers(theirs.id, "x", 10) == []
    assert await store.get_order(theirs.id, "o1") is None
    assert await baskets_of(store, theirs.id) == []
    assert await store.basket_count(theirs.id) == 0
    assert await store.product_basket_counts(theirs.id, ["p1"]) == {}
    assert await store.pair_counts(theirs.id, "p1") == []
    assert await store.neighbors(theirs.id, "p1", 10) == []
    assert await store.visitor_state(theirs.id, "v", "c", 0) == VisitorState()
    assert await store.version(theirs.id) == theirs_version


async def test_same_ids_in_two_stores_stay_apart(store: Store) -> None:
    mine, theirs = await new_store(store), await new_store(store)
    await store.upsert_products(mine.id, [product("p1", price=100)])
    await store.upsert_products(theirs.id, [product("p1", price=200)])
    await store.add_orders(mine.id, [order("o1", ["p1"])])
    await store.add_orders(theirs.id, [order("o1", ["p2"])])  # same order id: not a duplicate
    await store.replace_pair_counts(mine.id, [("p1", "p2", 5)])
    await store.replace_pair_counts(theirs.id, [("p1", "p3", 1)])

    assert (await store.get_products(mine.id, ["p1"]))["p1"].price == 100
    assert (await store.get_products(theirs.id, ["p1"]))["p1"].price == 200
    assert await baskets_of(store, theirs.id) == [frozenset({"p2"})]
    assert await store.pair_counts(mine.id, "p1") == [PairCount("p2", 5)]
    assert await store.pair_counts(theirs.id, "p1") == [PairCount("p3", 1)]


async def test_writes_to_an_unknown_store_raise_store_error(store: Store) -> None:
    unknown = unique("st_")

    with pytest.raises(StoreError):
        await store.upsert_products(unknown, [product("a")])
    with pytest.raises(StoreError):
        await store.add_orders(unknown, [order("o1", ["a"])])
    with pytest.raises(StoreError):
        await store.replace_pair_counts(unknown, [("a", "b", 1)])
    assert await store.version(unknown) == 0


async def test_ping_answers_while_open(store: Store) -> None:
    await store.ping()


# The SQLite backend's own promises.


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/shared/offers.db"


@asynccontextmanager
async def opened(url: str) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore.from_url(url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_two_sqlite_stores_on_one_file_see_each_others_writes(db_url: str) -> None:
    async with opened(db_url) as first, opened(db_url) as second:
        record = await first.create_store("Shared")
        assert await second.store_by_key(record.secret_key) == record
        version = await second.version(record.id)

        await second.upsert_products(record.id, [product("a")])
        assert await first.version(record.id) > version
        assert await first.get_products(record.id, ["a"]) == {"a": product("a")}

        await first.set_rules(record.id, StoreRules(margin_floor=7))
        assert (await second.get_store(record.id)).rules.margin_floor == 7  # type: ignore[union-attr]


async def test_concurrent_writers_on_one_file_import_each_order_once(db_url: str) -> None:
    async with opened(db_url) as first, opened(db_url) as second:
        record = await first.create_store("Shared")
        orders = [order(f"o{i:04d}", [f"p{i % 13}", f"p{i % 5}"]) for i in range(3000)]

        results = await asyncio.gather(
            first.add_orders(record.id, orders[:2000]),
            second.add_orders(record.id, orders[1000:]),
            first.add_orders(record.id, orders[500:1500]),
        )

        assert sum(r.imported for r in results) == 3000
        assert await second.basket_count(record.id) == 3000
        assert len(await baskets_of(first, record.id)) == 3000


async def test_another_process_sees_the_same_file(db_url: str) -> None:
    async with opened(db_url) as store:
        record = await store.create_store("Shared")
        script = (
            "import asyncio, sys\n"
            "from offer_service.storage import open_store\n"
            "from offer_service.domain.products import Product\n"
            "async def main():\n"
            "    s = open_store(sys.argv[1]); await s.open()\n"
            "    r = await s.store_by_key(sys.argv[2])\n"
            "    await s.upsert_products(r.id, [Product(id='from-child', title='t', price=1)])\n"
            "    await s.close()\n"
            "asyncio.run(main())\n"
        )
        before = await store.version(record.id)

        subprocess.run(
            [sys.executable, "-c", script, db_url, record.publishable_key], check=True, timeout=60
        )

        assert await store.version(record.id) > before
        assert list(await store.get_products(record.id, ["from-child"])) == ["from-child"]


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    yield tmp_path


async def test_from_url_takes_relative_and_absolute_paths_and_makes_directories(
    in_tmp: Path,
) -> None:
    relative = open_store("sqlite:///./offer-data/offers.db")
    absolute = open_store(f"sqlite:///{in_tmp}/abs/deeper/offers.db")  # four slashes
    assert isinstance(relative, SQLiteStore) and isinstance(absolute, SQLiteStore)
    assert (relative.path, absolute.path) == (
        "./offer-data/offers.db",
        f"{in_tmp}/abs/deeper/offers.db",
    )

    for store in (relative, absolute):
        await store.open()
        await store.create_store("On disk")
        await store.close()

    assert (in_tmp / "offer-data" / "offers.db").is_file()
    assert (in_tmp / "abs" / "deeper" / "offers.db").is_file()


def test_from_url_rejects_what_is_not_a_sqlite_path() -> None:
    for url in ("sqlite://", "sqlite:///", "sqlite://host/offers.db", "redis+sqlite:///x"):
        with pytest.raises(ValueError):
            SQLiteStore.from_url(url)


async def test_the_file_is_in_wal_mode_with_a_schema_version(db_url: str, tmp_path: Path) -> None:
    async with opened(db_url):
        pass
    with sqlite3.connect(tmp_path / "shared" / "offers.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


async def test_reopening_keeps_the_data(db_url: str) -> None:
    async with opened(db_url) as store:
        record = await store.create_store("Kept")
        await store.add_orders(record.id, [order("o1", ["a"])])
    async with opened(db_url) as store:
        assert await store.get_store(record.id) == record
        assert await store.basket_count(record.id) == 1


async def test_reads_by_time_search_an_index_by_time(db_url: str) -> None:
    """The learner reads the last minutes of orders and events every minute: on a big store a
    read of every row of the store would stall the answers served meanwhile."""
    async with opened(db_url) as store:
        record = await store.create_store("Timed")
        await store.add_orders(record.id, [order(f"o{i}", ["a"], at_ms=i) for i in range(50)])
        reader = store._reader
        assert reader is not None
        statements: list[str] = []
        reader.set_trace_callback(statements.append)
        try:
            assert len([o async for o in store.iter_orders(record.id, 10, 20)]) == 10
            assert [e async for e in store.iter_events(record.id, 10, 20)] == []
        finally:
            reader.set_trace_callback(None)
        reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
        assert len(reads) == 2
        for sql, column in zip(reads, ("placed_at_ms", "last_ms"), strict=True):
            plan = " ".join(row[3] for row in reader.execute("EXPLAIN QUERY PLAN " + sql))
            # The time range bounds the search itself, not a filter over the store's rows.
            assert re.search(rf"SEARCH \w+ USING (COVERING )?INDEX \w+ \(.*{column}>", plan), plan


async def test_visitor_changes_read_only_the_new_rows(db_url: str) -> None:
    """Every process asks for the changed visitors twice a second: a statement planned on the
    store's index of signals walks all of them (23 ms at 333,000 rows, a stall each time)."""
    async with opened(db_url) as store:
        record = await store.create_store("Changes")
        cursor = (await store.visitor_changes(record.id, None)).cursor
        for i in range(20):
            await store.record_visitor_signal(record.id, f"v{i}", "a", "impression", i)
        reader = store._reader
        assert reader is not None
        statements: list[str] = []
        reader.set_trace_callback(statements.append)
        try:
            changes = await store.visitor_changes(record.id, cursor)
        finally:
            reader.set_trace_callback(None)
        assert changes.visitors == {f"v{i}" for i in range(20)}
        (sql,) = [s for s in statements if "DISTINCT visitor_id" in s]
        plan = " ".join(row[3] for row in reader.execute("EXPLAIN QUERY PLAN " + sql))
        assert re.search(r"SEARCH visitor_signals USING INTEGER PRIMARY KEY \(rowid>", plan), plan


async def test_a_database_from_a_newer_release_is_refused(db_url: str, tmp_path: Path) -> None:
    async with opened(db_url):
        pass
    with sqlite3.connect(tmp_path / "shared" / "offers.db") as conn:
        conn.execute("PRAGMA user_version = 99")

    with pytest.raises(StoreError, match="schema version 99"):
        await SQLiteStore.from_url(db_url).open()


async def test_sqlite_failures_surface_as_store_error(tmp_path: Path) -> None:
    garbage = tmp_path / "not-a-db.db"
    garbage.write_bytes(b"this is not a database file" * 100)

    with pytest.raises(StoreError) as caught:
        await SQLiteStore(str(garbage)).open()
    assert isinstance(caught.value.__cause__, sqlite3.Error)

    async with opened(f"sqlite:///{tmp_path}/ok.db") as store:
        pass
    with pytest.raises(StoreError):
        await store.ping()
    with pytest.raises(StoreError):
        await store.create_store("closed")


async def test_an_in_memory_store_works() -> None:
    async with opened("sqlite:///:memory:") as store:
        record = await store.create_store("Memory")
        await store.add_orders(record.id, [order("o1", ["a", "b"])])
        await store.replace_pair_counts(record.id, [("a", "b", 1)])

        assert await baskets_of(store, record.id) == [frozenset({"a", "b"})]
        assert await store.pair_counts(record.id, "a") == [PairCount("b", 1)]


@pytest.mark.parametrize(
    ("url", "shared"),
    [
        ("sqlite:///offer-data/offers.db", True),
        ("sqlite:////var/lib/offers.db?mode=rwc", True),
        ("sqlite:///memory.db", True),
        ("sqlite:///:memory:", False),
        ("sqlite:///:memory:?cache=private", False),
        ("redis://127.0.0.1:6379/0", True),
        ("redis+cluster://127.0.0.1:7000", True),
    ],
)
def test_only_an_in_memory_store_is_kept_from_other_processes(url: str, shared: bool) -> None:
    assert shared_by_processes(url) is shared
