"""The index of each store's visitors with a state: a visitor it does not list is answered
EMPTY_VISITOR without a store read, a listed one with one read; until it is loaded, after the
change feed overflowed and while the store fails, every visitor is read as without it."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from offer_service.domain.orders import Order, OrderLine
from offer_service.domain.policy import StoreRules
from offer_service.domain.records import EMPTY_VISITOR, StoreRecord, VisitorChanges, VisitorIds
from offer_service.exceptions import StoreUnavailable
from offer_service.serving import visitor_index
from offer_service.serving import visitors as visitors_module
from offer_service.serving.visitor_index import VisitorIndex, visitor_hash
from offer_service.serving.visitors import INDEX, STORE, Visitors
from offer_service.storage.sqlite.store import SQLiteStore
from offer_service.types import HOUR_MS

pytestmark = pytest.mark.anyio

NOW = 1_800_000_000_000
RULES = StoreRules()
WINDOW = RULES.frequency_cap.window_hours * HOUR_MS


class GatedStore(SQLiteStore):
    """The real SQLite store, whose listing waits for `listing` to be set and whose reads can
    fail as a store that went down does."""

    listing: asyncio.Event
    answering: asyncio.Event
    down = False

    async def visitor_ids(
        self, store_id: str, since_ms: int, page: str | None = None
    ) -> VisitorIds:
        await self.listing.wait()
        return await super().visitor_ids(store_id, since_ms, page)

    async def visitor_changes(self, store_id: str, after: str | None) -> VisitorChanges:
        if self.down:
            raise StoreUnavailable("down")
        changes = await super().visitor_changes(store_id, after)
        await self.answering.wait()  # read, and not yet answered
        return changes


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[tuple[GatedStore, SQLiteStore, StoreRecord]]:
    """This process's store, another process's store on the same file, and a store record."""
    mine, theirs = GatedStore(str(tmp_path / "shop.db")), SQLiteStore(str(tmp_path / "shop.db"))
    mine.listing, mine.answering = asyncio.Event(), asyncio.Event()
    mine.listing.set()
    mine.answering.set()
    await mine.open()
    await theirs.open()
    try:
        yield mine, theirs, await mine.create_store("Shop")
    finally:
        await theirs.close()
        await mine.close()


@pytest.fixture(autouse=True)
def poll_every_request(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every `state` reads the change feed: what another process wrote is seen at once.
    monkeypatch.setattr(visitors_module, "VISITOR_POLL_S", 0.0)


def order(order_id: str, products: list[str], visitor: str) -> Order:
    lines = tuple(OrderLine(product_id=p, quantity=1, price=500) for p in products)
    return Order(id=order_id, placed_at_ms=NOW, currency="USD", lines=lines, visitor_id=visitor)


async def loaded(visitors: Visitors, store_id: str) -> VisitorIndex:
    assert visitors.indexes is not None
    for _ in range(500):
        index = visitors.indexes.get(store_id)
        if index is not None:
            return index
        await asyncio.sleep(0.01)
    raise AssertionError("the index was not loaded")


async def ready(store: SQLiteStore, store_id: str, **kwargs: float) -> Visitors:
    """This process's visitors, once the first request loaded the store's index."""
    visitors = Visitors(store, random.Random(7), **kwargs)  # type: ignore[arg-type]
    await reads_of(visitors, store_id, "first")
    await loaded(visitors, store_id)
    return visitors


async def reads_of(visitors: Visitors, store_id: str, visitor_id: str, now_ms: int = NOW) -> int:
    """The store reads one `state` of the visitor took (and it must be a plain request's)."""
    before = visitors.sources[STORE]
    await visitors.state(store_id, visitor_id, None, RULES, 1, now_ms)
    return visitors.sources[STORE] - before


def test_visitor_hash_is_64_bits_and_the_same_for_the_same_id() -> None:
    assert visitor_hash("v1") == visitor_hash("".join(["v", "1"]))  # not by identity
    hashes = {visitor_hash(f"v{n}") for n in range(10_000)}
    assert len(hashes) == 10_000
    assert all(0 <= h < 2**64 for h in hashes)


@pytest.mark.parametrize("one_array_max", [visitor_index.ONE_ARRAY_MAX, 10])
async def test_an_index_lists_its_snapshot_and_what_was_added_since(
    one_array_max: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small (one sorted array) or large (an array per top byte of the hash)."""
    monkeypatch.setattr(visitor_index, "ONE_ARRAY_MAX", one_array_max)
    index = VisitorIndex(since_ms=NOW - WINDOW, built_at=0.0)
    index.extend(f"v{n}" for n in range(2_000))
    await index.seal()
    index.add(["late"])

    assert all(f"v{n}" in index for n in range(2_000))
    assert "late" in index
    assert "v2000" not in index and "stranger" not in index
    assert len(index) == 2_001
    assert index.covers(NOW - WINDOW) and index.covers(NOW)
    assert not index.covers(NOW - WINDOW - 1)  # a longer window: older impressions unlisted


async def test_a_visitor_without_state_costs_no_read_and_one_with_state_one(
    shop: tuple[GatedStore, SQLiteStore, StoreRecord],
) -> None:
    mine, theirs, record = shop
    await theirs.record_visitor_signal(record.id, "known", "p", "decline", NOW)
    visitors = Visitors(mine, random.Random(7))
    assert await reads_of(visitors, record.id, "first") == 1  # nothing loaded yet
    await loaded(visitors, record.id)

    assert [await reads_of(visitors, record.id, f"fresh-{n}") for n in range(50)] == [0] * 50
    assert await reads_of(visitors, record.id, "known") == 1
    assert await reads_of(visitors, record.id, "known") == 0  # held
    state = await visitors.state(record.id, "known", None, RULES, 1, NOW)
    assert state.declined == {"p"}
    assert visitors.sources[INDEX] >= 50


async def test_a_request_with_a_customer_id_is_read_as_before(
    shop: tuple[GatedStore, SQLiteStore, StoreRecord],
) -> None:
    mine, _, record = shop
    visitors = await ready(mine, record.id)
    before = visitors.sources[STORE]

    await visitors.state(record.id, "fresh", "customer-1", RULES, 1, NOW)

    assert visitors.sources[STORE] == before + 1


async def test_until_the_index_is_loaded_every_visitor_is_read(
    shop: tuple[GatedStore, SQLiteStore, StoreRecord],
) -> None:
    mine, _, record = shop
    mine.listing.clear()  # the listing hangs
    visitors = Visitors(mine, random.Random(7))

    assert [await reads_of(visitors, record.id, f"fresh-{n}") for n in range(5)] == [1] * 5
    mine.listing.set()
    await loaded(visitors, record.id)
    assert await reads_of(visitors, record.id, "fresh-again") == 0


async def test_what_another_process_writes_is_listed_at_its_next_feed_read(
    shop: tuple[GatedStore, SQLiteStore, StoreRecord],
) -> None:
    mine, theirs, record = shop
    visitors = await ready(mine, record.id)
    assert await reads_of(visitors, record.id, "v1") == 0

    await theirs.record_visitor_signal(record.id, "v1", "p", "impression", NOW)

    state = await visitors.state(record.id, "v1", None, RULES, 1, NOW)
    assert state.impressions == {"p": 1}


async def test_a_write_made_while_the_index_is_built_is_listed_by_it(
    shop: tuple[GatedStore, SQLiteStore, StoreRecord],
) -> None:
    mine, theirs, record = shop
    mine.listing.clear()
    visitors = Visitors(mine, random.Random(7))
    await reads_of(visitors, record.id, "first")  # the build starts, its listing waits
    await theirs.record_visitor_signal(record.id, "meanwhile", "p", "decline", NOW)
    await reads_of(visitors, record.id, "other")  # the feed names it to the build
    mine.listing.set()
    index = await loaded(visitors, record.id)

    assert "meanwhile" in index
    assert (await visitors.state(record.id, "meanwhile", None, RULES, 1, NOW)).declined == {"p"}


async def test_after_the_feed_overflows_every_visitor_is_read_until_it_is_built_again(
    shop: tuple[GatedStore, SQLiteStore, StoreRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    mine, theirs, record = shop
    visitors = await ready(mine, record.id)
    monkeypatch.setattr("offer_service.storage.sqlite.signals.VISITOR_CHANGES_MAX", 2)
    monkeypatch.setattr(visitor_index, "VISITOR_INDEX_RETRY_S", 0.0)  # built again at once
    mine.listing.clear()  # the rebuild after the overflow waits
    for n in range(3):
        await theirs.record_visitor_signal(record.id, f"v{n}", "p", "decline", NOW)

    assert await reads_of(visitors, record.id, "v0") == 1  # the feed overflowed: unknown
    assert visitors.indexes is not None and visitors.indexes.get(record.id) is None
    assert await reads_of(visitors, record.id, "stranger") == 1
    mine.listing.set()
    index = await loaded(visitors, record.id)
    assert all(v in index for v in ("v0", "v1", "v2"))
    assert await reads_of(visitors, record.id, "stranger-2") == 0
    assert (await visitors.state(record.id, "v2", None, RULES, 1, NOW)).declined == {"p"}


async def test_while_the_change_feed_fails_every_visitor_is_read(
    shop: tuple[GatedStore, SQLiteStore, StoreRecord],
) -> None:
    mine, _, record = shop
    visitors = await ready(mine, record.id)
    mine.down = True

    assert await reads_of(visitors, record.id, "fresh") == 1
    mine.down = False
    assert await reads_of(visitors, record.id, "fresh-2") == 0


async def test_a_rebuild_drops_visitors_whose_impressions_left_the_window(
    shop: tuple[GatedStore, SQLiteStore, StoreRecord],
) -> None:
    mine, theirs, record = shop
    await theirs.record_visitor_signal(record.id, "shown", "p", "impression", NOW)
    visitors = Visitors(mine, random.Random(7), index_rebuild_s=0.0)
    await reads_of(visitors, record.id, "first")
    assert "shown" in await loaded(visitors, record.id)
    later = NOW + WINDOW + 1  # the impression left the frequency-cap window

    assert visitors.indexes is not None
    for _ in range(500):
        # A request's feed read starts a build (rebuilt whenever one is due: at once here).
        await reads_of(visitors, record.id, "first", later)
        index = visitors.indexes.get(record.id)
        if index is not None and index.since_ms == later - WINDOW:
            break
        await asyncio.sleep(0.01)
    assert "shown" not in visitors.indexes.get(record.id)  # type: ignore[operator]
    assert await reads_of(visitors, record.id, "shown", later) == 0


async def test_a_decline_or_event_of_this_process_is_listed_at_once(
    shop: tuple[GatedStore, SQLiteStore, StoreRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    mine, _, record = shop
    visitors = await ready(mine, record.id)
    monkeypatch.setattr(visitors_module, "VISITOR_POLL_S", 60.0)  # no feed read from here on
    await mine.record_visitor_signal(record.id, "decliner", "p", "decline", NOW)
    visitors.forget(record.id, ["decliner"])  # as commerce/decline.py does after its write

    assert visitors.held(record.id, "decliner", None, 1) is None
    assert (await visitors.state(record.id, "decliner", None, RULES, 1, NOW)).declined == {"p"}
    assert await reads_of(visitors, record.id, "x") == 0
    assert await visitors.state(record.id, "y", None, RULES, 1, NOW) == EMPTY_VISITOR


async def test_a_write_of_this_process_during_a_feed_read_is_read_before_the_next_answer(
    shop: tuple[GatedStore, SQLiteStore, StoreRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An order sent through this process names no visitor here: the change feed is read
    before the next answer, even when a read in flight when it was written missed it."""
    mine, _, record = shop
    visitors = await ready(mine, record.id)
    monkeypatch.setattr(visitors_module, "VISITOR_POLL_S", 60.0)  # read only when asked to
    visitors.follow_soon(record.id)
    mine.answering.clear()
    in_flight = asyncio.create_task(visitors.state(record.id, "x", None, RULES, 1, NOW))
    await asyncio.sleep(0.05)  # the feed is read; its answer waits
    await mine.add_orders(record.id, [order("o1", ["p"], visitor="buyer")])
    visitors.follow_soon(record.id)  # as Engine.changed does after an order
    mine.answering.set()
    await in_flight

    state = await visitors.state(record.id, "buyer", None, RULES, 1, NOW)

    assert set(state.purchased) == {"p"}
