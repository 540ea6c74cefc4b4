"""The Redis backend's own promises, beyond the shared contract: URLs, one hash tag per store,
the event stream's consumer group (redelivery, dead letters, trimming), failures as
StoreUnavailable, and the spool that keeps events while Redis is away."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from offer_service.domain.events import StoredEvent
from offer_service.domain.orders import OrderLine, ProductReturn
from offer_service.domain.records import PairCount
from offer_service.exceptions import StoreError, StoreUnavailable
from offer_service.serving.spool import Spool, record_events, replay_before_exit
from offer_service.storage import open_store
from offer_service.storage.redis.keys import GROUP, StoreKeys
from offer_service.storage.redis.recent import Acknowledged
from offer_service.storage.redis.store import RedisStore
from tests.redis_servers import (
    RELAXED,
    RedisServer,
    free_port,
    opened_redis,
    shared_cluster,
    shared_redis,
)
from tests.storage.test_storage_contract import order, product

pytestmark = pytest.mark.anyio

NOW = 1_800_000_000_000
DAY = 86_400_000


def event(event_id: str, kind: str = "impression", *, product_id: str = "p1") -> StoredEvent:
    return StoredEvent(
        id=event_id,
        type=kind,
        ts_ms=NOW,
        received_ms=NOW,
        visitor_id="v1",
        surface="cart",
        kind="cross_sell",
        product_id=product_id,
        offer_id="off_1",
        order_id=None,
        arm=None,
        offer_price=900,
        currency="USD",
    )


COUNTER = ("cart", "cross_sell", "p1", "", "impression")


@pytest.fixture
async def store() -> AsyncIterator[RedisStore]:
    async with opened_redis(shared_redis().url + RELAXED) as opened:
        yield opened


@pytest.fixture
async def raw() -> AsyncIterator[Any]:
    # A plain client, to look at and tamper with the keys directly (redis-py's annotations
    # cover sync and async clients at once, so replies are typed loosely: Any here).
    client = Redis.from_url(shared_redis().url)
    try:
        yield client
    finally:
        await client.aclose()


# URLs


def test_open_store_chooses_redis_and_redis_cluster_by_scheme() -> None:
    single = open_store("redis://127.0.0.1:6379/2?read_timeout_ms=50&accept_timeout_ms=300")
    cluster = open_store("redis+cluster://10.0.0.1:7000")
    assert isinstance(single, RedisStore) and isinstance(cluster, RedisStore)
    assert (single.cluster, single.read_timeout_s, single.accept_timeout_s) == (False, 0.05, 0.3)
    assert (cluster.cluster, cluster.read_timeout_s, cluster.write_timeout_s) == (True, 0.1, 5.0)
    for bad in ("redis://", "memcached://x:1", "redis+sqlite:///x"):
        with pytest.raises(ValueError):
            open_store(bad)


# keys


async def test_every_key_of_a_store_lives_in_the_store_s_cluster_slot(
    store: RedisStore, raw: Any
) -> None:
    record = await store.create_store("Tagged", store_id=f"st_{uuid.uuid4().hex[:8]}")
    sid = record.id
    await store.upsert_products(sid, [product("a", category="x", family="f"), product("b")])
    await store.add_orders(sid, [order("o1", ["a", "b"], customer="c", visitor="v")])
    await store.add_returns(sid, [ProductReturn(("a",), 1, order_id="o1")])
    await store.replace_pair_counts(sid, [("a", "b", 1)])
    await store.set_neighbors(sid, {"a": [PairCount("b", 1)]})
    await store.record_events(sid, [event("e1"), event("e2", "click")], NOW - DAY)
    await store.record_visitor_signal(sid, "v", "a", "decline", 1)
    await store.claim_idempotency(sid, "k", "fp", "me", NOW, lease_ms=1, ttl_ms=DAY)
    await store.reserve_accept(sid, "o1", "b", "k", cap=3, now_ms=NOW, lease_ms=1)
    await store.complete_accept(sid, "o1", OrderLine("b", 1, 900), "ch_1", NOW)
    await store.event_counters(sid)

    names = [k.decode() async for k in raw.scan_iter(match=f"offer:{{{sid}}}:*")]

    assert len(names) >= 20
    assert {key_slot(name.encode()) for name in names} == {key_slot(sid.encode())}
    assert all(name.startswith(f"offer:{{{sid}}}:") for name in names)


async def test_a_store_id_with_braces_is_refused(store: RedisStore) -> None:
    with pytest.raises(StoreError):
        await store.create_store("Bad", store_id="st_{x}")


# the event stream


async def test_the_aggregator_walks_every_store_created(store: RedisStore) -> None:
    first, second = await store.create_store("One"), await store.create_store("Two")

    ids = await store.store_ids()

    assert {first.id, second.id} <= set(ids)
    assert ids == sorted(ids)


async def test_counters_come_from_the_consumer_group_and_count_each_event_once(
    store: RedisStore, raw: Any
) -> None:
    record = await store.create_store("Events")
    k = StoreKeys(record.id)
    fresh = await store.record_events(record.id, [event(f"e{i}") for i in range(30)], NOW - DAY)
    assert fresh == [True] * 30
    # Recorded in the stream, not counted yet: the aggregator counts.
    assert await raw.xlen(k.events) == 30
    assert await raw.hgetall(k.counters) == {}

    # A consumer reads ten entries and dies before acknowledging them.
    dead = await raw.xreadgroup(GROUP, "dead-consumer", {k.events: ">"}, count=10)
    assert len(dead[0][1]) == 10
    assert await store.aggregate(record.id, "live") == 20
    # The dead consumer's entries are claimed (XAUTOCLAIM) once they are idle long enough.
    assert await store.reclaim(record.id, "live", min_idle_ms=60_000) == 0
    assert await store.reclaim(record.id, "live", min_idle_ms=0) == 10
    # Delivering the same entries again counts nothing: acknowledging and counting is one step.
    ids = [entry_id for entry_id, _ in dead[0][1]]
    assert await store._apply(k, ids) == 0

    assert (await store.event_counters(record.id))[COUNTER] == 30
    assert await raw.xpending(k.events, GROUP) == {
        "pending": 0,
        "min": None,
        "max": None,
        "consumers": [],
    }


async def test_reading_counters_counts_what_no_worker_has_counted_yet(store: RedisStore) -> None:
    record = await store.create_store("No worker")
    await store.record_events(record.id, [event("a"), event("b"), event("c", "click")], 0)

    counters = await store.event_counters(record.id)

    assert counters[COUNTER] == 2
    assert counters[("cart", "cross_sell", "p1", "", "click")] == 1
    assert [e.id async for e in store.iter_events(record.id, NOW, NOW + 1)] == ["a", "b", "c"]


async def test_an_event_appended_twice_is_counted_once(store: RedisStore, raw: Any) -> None:
    record = await store.create_store("Twice")
    k = StoreKeys(record.id)
    await store.record_events(record.id, [event("once")], NOW - DAY)
    (entry,) = await raw.xrange(k.events)
    # The same entry appended again (as a replay racing a lost acknowledgement might).
    await raw.xadd(k.events, entry[1])

    assert (await store.event_counters(record.id))[COUNTER] == 1


async def test_poison_entries_go_to_the_dead_letter_stream_after_n_deliveries(
    store: RedisStore, raw: Any
) -> None:
    record = await store.create_store("Poison")
    k = StoreKeys(record.id)
    await store.record_events(record.id, [event("good-1")], NOW - DAY)
    await raw.xadd(k.events, {"garbage": "not an event"})
    await store.record_events(record.id, [event("good-2")], NOW - DAY)

    assert await store.aggregate(record.id, "c1") == 2
    for _ in range(3):
        await store.reclaim(record.id, "c1", min_idle_ms=0, max_deliveries=3)

    letters = await store.dead_letters(record.id)
    assert len(letters) == 1
    assert letters[0]["f:garbage"] == "not an event"
    assert letters[0]["reason"].startswith("malformed entry")
    assert int(letters[0]["deliveries"]) >= 3
    assert (await raw.xpending(k.events, GROUP))["pending"] == 0
    assert (await store.event_counters(record.id))[COUNTER] == 2


async def test_trimming_never_drops_an_unacknowledged_entry(store: RedisStore, raw: Any) -> None:
    record = await store.create_store("Trim")
    k = StoreKeys(record.id)
    await store.record_events(record.id, [event(f"a{i}") for i in range(10)], NOW - DAY)
    await store.aggregate(record.id, "c1")  # a0..a9 counted and acknowledged
    await store.record_events(record.id, [event(f"b{i}") for i in range(5)], NOW - DAY)
    delivered = await raw.xreadgroup(GROUP, "slow", {k.events: ">"}, count=2)  # b0, b1 pending
    await store.record_events(record.id, [event(f"c{i}") for i in range(4)], NOW - DAY)

    await store.trim_events(record.id)

    left = [fields[b"i"].decode() for _, fields in await raw.xrange(k.events)]
    assert left == ["b0", "b1", "b2", "b3", "b4", "c0", "c1", "c2", "c3"]
    assert [entry_id for entry_id, _ in delivered[0][1]] == [
        e for e, _ in await raw.xrange(k.events)
    ][:2]

    assert await store.reclaim(record.id, "c1", min_idle_ms=0) == 2
    assert await store.aggregate(record.id, "c1") == 7
    await store.trim_events(record.id)
    assert await raw.xlen(k.events) <= 1  # at most the last delivered entry is kept
    assert (await store.event_counters(record.id))[COUNTER] == 19


async def test_the_event_log_keeps_the_days_it_is_told_and_the_counters_keep_counting() -> None:
    now = int(time.time() * 1000)
    old = [dataclasses.replace(event(f"old-{i}"), received_ms=now - 40 * DAY) for i in range(3)]
    recent = [dataclasses.replace(event(f"new-{i}"), received_ms=now) for i in range(2)]
    async with opened_redis(shared_redis().url + RELAXED + "&event_log_days=30") as store:
        record = await store.create_store("Retention")
        await store.record_events(record.id, old + recent, 0)
        await store.drain(record.id)

        await store.trim_events(record.id)

        kept = [e.id async for e in store.iter_events(record.id, 0, now + 1)]
        assert kept == ["new-0", "new-1"]
        assert (await store.event_counters(record.id))[COUNTER] == 5


async def test_by_default_the_event_log_keeps_ninety_days() -> None:
    now = int(time.time() * 1000)
    ages = {"days-100": 100, "days-89": 89, "days-40": 40, "today": 0}
    events = [dataclasses.replace(event(i), received_ms=now - d * DAY) for i, d in ages.items()]
    async with opened_redis(shared_redis().url + RELAXED) as store:
        record = await store.create_store("Default retention")
        await store.record_events(record.id, events, 0)
        await store.drain(record.id)

        await store.trim_events(record.id)

        kept = [e.id async for e in store.iter_events(record.id, 0, now + 1)]
        assert kept == ["days-89", "days-40", "today"]
        assert (await store.event_counters(record.id))[COUNTER] == 4


async def test_idle_consumers_without_pending_entries_are_forgotten(store: RedisStore) -> None:
    record = await store.create_store("Consumers")
    await store.record_events(record.id, [event("e")], NOW - DAY)
    await store.aggregate(record.id, "gone")
    await asyncio.sleep(0.05)

    assert await store.drop_idle_consumers(record.id, idle_ms=10) == 1
    assert await store.drop_idle_consumers(record.id, idle_ms=10) == 0


# failures


async def test_a_redis_that_is_down_raises_store_unavailable_fast() -> None:
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0")
    await store.open()
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.ping()
        with pytest.raises(StoreUnavailable):
            await store.record_events("st_x", [event("e")], 0)
        with pytest.raises(StoreUnavailable):
            await store.claim_idempotency("st_x", "k", "f", "o", NOW, lease_ms=1, ttl_ms=1)
        with pytest.raises(StoreUnavailable):
            await store.visitor_state("st_x", "v", None, 0)
        elapsed = time.monotonic() - started
        print(f"four calls to a Redis that is down failed in {elapsed * 1000:.0f} ms")
        assert elapsed < 5  # no retries with back-off, no hanging
    finally:
        await store.close()


async def test_a_store_error_that_is_not_an_outage_is_a_plain_store_error(
    store: RedisStore,
) -> None:
    with pytest.raises(StoreError) as caught:
        await store.upsert_products(f"st_{uuid.uuid4().hex}", [product("a")])
    assert not isinstance(caught.value, StoreUnavailable)


# the spool


@asynccontextmanager
async def spooling(tmp_path: Path) -> AsyncIterator[tuple[RedisServer, RedisStore, Spool]]:
    """A Redis server of the test's own (to kill and restart), a store on it, a spool."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    spool = Spool(tmp_path / "spool")
    try:
        async with opened_redis(server.url + RELAXED) as store:
            yield server, store, spool
    finally:
        spool.close()
        server.stop()


async def test_events_spooled_while_redis_is_down_are_replayed_once(tmp_path: Path) -> None:
    async with spooling(tmp_path) as (server, store, spool):
        record = await store.create_store("Spooled")
        assert await record_events(store, spool, record.id, [event("before")], 0) == [True]
        server.kill()
        for i in range(3):
            batch = [event(f"down-{i}"), event("before")]
            assert await record_events(store, spool, record.id, batch, 0) == [True, True]
        assert spool.pending()
        with pytest.raises(StoreUnavailable):
            await spool.replay(store)
        server.start()  # same port, same AOF
        await store.ping()  # as the replay loop does before it replays

        # A copy of the file, as if a second replayer picked it up too.
        (segment,) = (tmp_path / "spool").glob("*.spool")
        (tmp_path / "spool" / "copy.spool").write_bytes(segment.read_bytes())
        assert await spool.replay(store) == 12
        assert not spool.pending()

        counters = await store.event_counters(record.id)
        ids = [e.id async for e in store.iter_events(record.id, 0, NOW + 1)]
        assert counters[COUNTER] == 4
        assert sorted(ids) == ["before", "down-0", "down-1", "down-2"]


async def test_a_last_replay_on_the_way_out_sends_the_spool_or_leaves_it(tmp_path: Path) -> None:
    async with spooling(tmp_path) as (server, store, spool):
        record = await store.create_store("Leaving")
        server.kill()
        assert await record_events(store, spool, record.id, [event("down")], 0) == [True]

        # Redis still down: the process leaves without waiting long, the spool kept.
        started = time.monotonic()
        await replay_before_exit(spool, store, timeout_s=1.0)
        assert time.monotonic() - started < 2.0
        assert spool.pending()

        server.start()
        await replay_before_exit(spool, store, timeout_s=5.0)
        assert not spool.pending()
        ids = [e.id async for e in store.iter_events(record.id, 0, NOW + 1)]
        assert ids == ["down"]


async def test_a_spool_file_left_by_a_dead_process_is_replayed_and_a_torn_line_skipped(
    tmp_path: Path, store: RedisStore
) -> None:
    record = await store.create_store("Orphan")
    directory = tmp_path / "spool"
    dead = Spool(directory)
    await dead.append(record.id, [event("orphan-1"), event("orphan-2")], 0)
    dead.close()  # the process died: its lock is gone
    (segment,) = directory.glob("*.spool")
    with segment.open("ab") as f:
        f.write(b'{"s": "' + record.id.encode() + b'", "d": 0, "e": [["cut sh')

    alive = Spool(directory)
    assert await alive.replay(store) == 2
    assert list(directory.glob("*.spool")) == []
    assert (await store.event_counters(record.id))[COUNTER] == 2


async def test_a_live_writer_s_spool_file_is_not_taken_by_another_replayer(
    tmp_path: Path, store: RedisStore
) -> None:
    record = await store.create_store("Locked")
    writer, other = Spool(tmp_path), Spool(tmp_path)
    await writer.append(record.id, [event("mine")], 0)

    assert await other.replay(store) == 0
    assert await writer.replay(store) == 1
    writer.close()


# the same data on both backends


@pytest.mark.dataset
@pytest.mark.parametrize("bulk", [True, False], ids=["recount", "increments"])
async def test_the_france_orders_give_the_same_affinity_on_redis_and_sqlite(
    datasets: Path, tmp_path: Path, store: RedisStore, bulk: bool
) -> None:
    from offer_service.commerce.ingest import import_orders
    from offer_service.importers import parse_online_retail
    from offer_service.storage.sqlite.store import SQLiteStore

    parsed = parse_online_retail(datasets / "online_retail_france.csv")
    sqlite = SQLiteStore(str(tmp_path / "offers.db"))
    await sqlite.open()
    try:
        results = []
        for backend in (sqlite, store):
            record = await backend.create_store("France")
            await backend.upsert_products(record.id, parsed.products)
            summary = await import_orders(
                backend, record, parsed.orders, parsed.returns, bulk_threshold=0 if bulk else 10**6
            )
            ids = [p.id for p in parsed.products]
            results.append(
                (
                    summary,
                    await backend.basket_count(record.id),
                    await backend.product_basket_counts(record.id, ids),
                    await backend.best_sellers(record.id, None, 50),
                    {pid: await backend.neighbors(record.id, pid, 50) for pid in ids},
                    {pid: await backend.pair_counts(record.id, pid) for pid in ids[:200]},
                )
            )
    finally:
        await sqlite.close()

    on_sqlite, on_redis = results
    assert on_sqlite[0].imported > 300 and on_sqlite[0].rebuilt == bulk
    assert on_redis == on_sqlite


# events a restarted server may have lost


def test_acknowledged_batches_are_kept_until_the_server_lived_long_enough_to_write_them() -> None:
    now = [100.0]
    kept = Acknowledged(retain_s=5, max_events=8, clock=lambda: now[0])
    kept.add("s", [event("e1"), event("e2")], 0)
    now[0] = 103.0
    kept.add("s", [event("e3")], 0)
    kept.checked("run-a", started=104.0)  # e1, e2 were written 4 s ago: maybe not yet
    assert [e.id for b in kept.kept() for e in b.events] == ["e1", "e2", "e3"]
    kept.checked("run-a", started=105.5)
    assert [e.id for b in kept.kept() for e in b.events] == ["e3"]
    kept.sent_again(kept.kept(), at=110.0)  # sent to a new server: kept 5 s from then
    kept.checked("run-b", started=114.0)
    assert len(kept) == 1
    kept.add("s", [event(f"f{n}") for n in range(8)], 0)  # past the bound: the oldest go first
    assert len(kept) == 8 and kept.kept()[0].events[0].id == "f0"


@pytest.mark.parametrize("cluster", [False, True], ids=["redis", "cluster"])
async def test_a_restarted_server_gets_its_last_events_again_and_counts_them_once(
    cluster: bool,
) -> None:
    server = shared_cluster() if cluster else shared_redis()
    async with opened_redis(server.url + RELAXED) as store:
        await restarted_server_gets_its_last_events_again(store)


async def restarted_server_gets_its_last_events_again(store: RedisStore) -> None:
    record = await store.create_store(f"r-{uuid.uuid4().hex[:8]}")
    await store.record_events(record.id, [event("r1"), event("r2")], NOW - DAY)
    await store.resend_if_restarted()  # the first check learns the server's run id
    assert await store.resend_if_restarted() == 0
    store.acknowledged.server = "a run id of a server that is gone"
    assert await store.resend_if_restarted() == 2
    assert (await store.event_counters(record.id))[COUNTER] == 2
    assert [e.id async for e in store.iter_events(record.id, 0, 2**53)] == ["r1", "r2"]
