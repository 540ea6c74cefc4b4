"""The aggregation lag the metrics report, read from the stream itself: on one Redis and on a
Redis Cluster, and right after a restart, when XINFO GROUPS' own `lag` is not to be trusted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from offer_service.storage.redis.keys import GROUP, StoreKeys
from offer_service.storage.redis.store import RedisStore
from tests.redis_servers import RELAXED, RedisServer, opened_redis, shared_cluster, shared_redis
from tests.storage.test_storage_redis import NOW, event

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


@pytest.fixture(params=["redis", "cluster"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[RedisStore]:
    server = shared_redis() if request.param == "redis" else shared_cluster()
    async with opened_redis(server.url + RELAXED) as opened:
        yield opened


async def test_the_lag_is_the_age_of_the_oldest_event_not_yet_counted(store: RedisStore) -> None:
    record = await store.create_store("Lag")
    lag = await store.aggregation_lag(record.id)
    assert (lag.pending, lag.undelivered, lag.oldest_s) == (0, False, 0.0)  # nothing recorded

    await store.record_events(record.id, [event(f"u{i}") for i in range(5)], NOW)
    await asyncio.sleep(1.2)
    lag = await store.aggregation_lag(record.id)
    assert lag.undelivered and lag.pending == 0 and 1.1 < lag.oldest_s < 30

    # Read by a consumer that has not counted them yet: pending, still as old.
    k = StoreKeys(record.id)
    await store._write("read", lambda c: c.xreadgroup(GROUP, "slow", {k.events: ">"}, count=3))
    lag = await store.aggregation_lag(record.id)
    assert lag.pending == 3 and lag.undelivered and 1.1 < lag.oldest_s < 30

    assert await store.drain(record.id) == 5
    lag = await store.aggregation_lag(record.id)
    assert (lag.pending, lag.undelivered, lag.oldest_s) == (0, False, 0.0)


async def test_after_a_restart_with_nothing_waiting_the_lag_is_zero(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        async with opened_redis(server.url + RELAXED) as store:
            record = await store.create_store("Restarted")
            for batch in range(4):
                events = [event(f"r{batch}-{i}") for i in range(50)]
                await store.record_events(record.id, events, NOW)
            assert await store.drain(record.id) == 200
            await store.trim_events(record.id)
            await asyncio.sleep(1.5)  # appendfsync everysec
            server.kill()
            server.start()
            # Killed, started again on its AOF: the group's entries-read counter is lost (XINFO
            # GROUPS then derives its `lag` from an estimate); the lag read here is not.
            lag = await store.aggregation_lag(record.id)
            assert (lag.pending, lag.undelivered, lag.oldest_s) == (0, False, 0.0)

            # New events after the restart are seen as waiting, then as counted.
            await store.record_events(record.id, [event("after")], NOW)
            assert (await store.aggregation_lag(record.id)).undelivered
            assert await store.drain(record.id) == 1
            assert (await store.aggregation_lag(record.id)).oldest_s == 0.0
    finally:
        server.stop()
