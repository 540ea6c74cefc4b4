"""The aggregator's Redis scripts stay short on any backlog: a backlog is counted, trimmed and
expired in chunks of a bounded size, with the same totals as all at once. A Redis runs one
script at a time, and the request path's reads wait behind it. Each call is read back from
the server's own SLOWLOG (every command logged)."""

from __future__ import annotations

import dataclasses
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from offer_service.storage.codec import counter_key
from offer_service.storage.redis.events import (
    APPLY_CHUNK,
    EVENTS_PER_SCRIPT,
    TRIM_CHUNK,
)
from offer_service.storage.redis.keys import StoreKeys
from offer_service.storage.redis.scripts import Script
from offer_service.storage.redis.scripts.events import (
    APPLY_EVENTS,
    EXPIRE_EVENT_LOG,
    RECORD_EVENTS,
    TRIM_EVENTS,
)
from tests.redis_servers import RELAXED, RedisServer, opened_redis, running_redis
from tests.storage.test_storage_redis import DAY, event

pytestmark = pytest.mark.anyio

BACKLOG = 12_345
MORE = re.compile(rb"\.\.\. \((\d+) more arguments\)$")
PRODUCTS = ("p1", "p2", "p3", "p4", "p5", "p6", "p7")
KINDS = ("impression", "impression", "impression", "click")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from running_redis(tmp_path / "redis")


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[Any]:
    client = Redis.from_url(redis_server.url)
    await client.config_set("slowlog-log-slower-than", 0)
    await client.config_set("slowlog-max-len", 1_000_000)
    try:
        yield client
    finally:
        await client.aclose()


async def calls(raw: Any, script: Script) -> list[int]:
    """The number of arguments of each call of `script` since the last look (the SLOWLOG keeps
    31 of them and then says how many more there were)."""
    counts = []
    for entry in await raw.slowlog_get(1_000_000):
        command = entry["command"]
        if command.lower().startswith(b"evalsha " + script.sha.encode()):
            more = MORE.search(command)
            # Short calls (no "more") are the last chunk of a backlog, within the bound.
            counts.append(31 + int(more.group(1)) if more else 0)
    await raw.slowlog_reset()
    return counts


def backlog(now: int, *, received_days_ago: int = 0) -> list[Any]:
    return [
        dataclasses.replace(
            event(f"e{n}", KINDS[n % len(KINDS)], product_id=PRODUCTS[n % len(PRODUCTS)]),
            received_ms=now - received_days_ago * DAY,
        )
        for n in range(BACKLOG)
    ]


async def test_a_backlog_is_counted_in_bounded_chunks_with_the_same_totals(
    redis_server: RedisServer, raw: Any
) -> None:
    now = int(time.time() * 1000)
    events = backlog(now)
    async with opened_redis(redis_server.url + RELAXED) as store:
        record = await store.create_store("Backlog")
        # Recorded in one call, as a spool replay of a long outage would be.
        await store.record_events(record.id, events, 0)
        recorded = await calls(raw, RECORD_EVENTS)

        assert await store.aggregate(record.id, "catching-up") == BACKLOG
        applied = await calls(raw, APPLY_EVENTS)

        counters = await store.event_counters(record.id)
        k = StoreKeys(record.id)
        trimmed = await store.trim_events(record.id)
        trims = await calls(raw, TRIM_EVENTS)
        left = await raw.xlen(k.events)

    # The same totals as counting the events one by one.
    assert counters == dict(Counter(counter_key(e) for e in events))
    # Every call takes at most its chunk: EVALSHA, the SHA1, the number of keys and the key,
    # then for recording 6 arguments and 11 per event, for counting 2 and one id per entry.
    head = 3 + 1 + 6
    # (The first call of a script on a server is an EVAL, not counted here.)
    assert len(recorded) >= BACKLOG // EVENTS_PER_SCRIPT - 1
    assert max(recorded) == head + 11 * EVENTS_PER_SCRIPT
    assert len(applied) >= BACKLOG // APPLY_CHUNK
    assert max(applied) == 3 + 1 + 2 + APPLY_CHUNK
    # The trim removed the whole acknowledged backlog, a bounded number of entries a call.
    assert trimmed + left == BACKLOG and left <= 1
    assert len(trims) >= 2


async def test_old_events_leave_the_event_log_in_bounded_chunks(
    redis_server: RedisServer, raw: Any
) -> None:
    now = int(time.time() * 1000)
    old = backlog(now, received_days_ago=100)
    recent = [dataclasses.replace(event("today"), received_ms=now)]
    async with opened_redis(redis_server.url + RELAXED + "&event_log_days=90") as store:
        record = await store.create_store("Expiry")
        await store.record_events(record.id, old + recent, 0)
        await store.drain(record.id)
        await calls(raw, EXPIRE_EVENT_LOG)

        await store.trim_events(record.id)
        expiries = await calls(raw, EXPIRE_EVENT_LOG)

        kept = [e.id async for e in store.iter_events(record.id, 0, now + 1)]
        counted = sum((await store.event_counters(record.id)).values())
    assert kept == ["today"]
    assert counted == BACKLOG + 1  # the counters keep counting
    # One call per TRIM_CHUNK old entries, and one that finds none left.
    assert len(expiries) >= -(-BACKLOG // TRIM_CHUNK)
