"""Rate limits on Redis: real `offer-service serve` processes on a real `redis-server` count
against one limit, and fall back to counting in-process (never failing a request) while Redis
is down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from offer_service.domain.policy import RateLimits
from offer_service.storage.redis.keys import StoreKeys
from offer_service_tools.demo import DEMO_STORE_ID
from tests.flows import PK
from tests.processes import ServeProcess, prepare_demo_store, two_instances
from tests.redis_servers import RELAXED, RedisServer, opened_redis, running_redis

pytestmark = pytest.mark.timeout(240)

BURST = 20
# Slow enough that the bucket barely refills while a test runs.
PER_SECOND = 0.2
PARAMS = {"key": PK, "surface": "product_page", "product_id": "cam-x100"}


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from running_redis(tmp_path / "redis")


def limit_browser_routes(url: str) -> None:
    """The demo store with a small browser limit (admin routes stay out of the way)."""

    async def run() -> None:
        async with opened_redis(url) as store:
            record = await store.get_store(DEMO_STORE_ID)
            assert record is not None
            limits = RateLimits(browser_per_second=PER_SECOND, browser_burst=BURST)
            rules = record.rules.model_copy(update={"rate_limits": limits})
            await store.set_rules(DEMO_STORE_ID, rules)

    asyncio.run(run())


def bucket_exists(server: RedisServer, store_id: str = DEMO_STORE_ID, bucket: str = "") -> bool:
    """Whether a window of the store's rate limits holds the bucket (a client's count)."""
    bucket = bucket or "browser:127.0.0.1"
    windows = server.cli("--scan", "--pattern", StoreKeys(store_id).prefix + "rl:*")
    return any(server.cli("HEXISTS", w, bucket).strip() == "1" for w in windows.split())


def test_two_instances_share_one_limit(tmp_path: Path, redis_server: RedisServer) -> None:
    url = redis_server.url + RELAXED
    prepare_demo_store(url)
    limit_browser_routes(url)
    with two_instances(url, tmp_path) as (first, second), first.client() as a, second.client() as b:
        statuses: dict[str, list[int]] = {"a": [], "b": []}
        for i in range(2 * BURST):
            name, client = ("a", a) if i % 2 == 0 else ("b", b)
            statuses[name].append(client.get("/v1/offers", params=PARAMS).status_code)
    allowed = {name: s.count(200) for name, s in statuses.items()}
    print(f"\nallowed per instance: {allowed}; statuses: {statuses}")
    assert set(statuses["a"] + statuses["b"]) <= {200, 429}
    # One burst in all (plus what refills while the requests run), not one per instance.
    assert BURST <= allowed["a"] + allowed["b"] <= BURST + 2
    assert allowed["a"] >= BURST // 2 - 2 and allowed["b"] >= BURST // 2 - 2
    assert bucket_exists(redis_server)


def test_with_redis_down_the_limit_is_counted_in_process(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    url = redis_server.url  # the production timeouts
    prepare_demo_store(url)
    limit_browser_routes(url)
    service = ServeProcess(url, tmp_path / "a.log")
    try:
        with service.client() as c:
            before = [c.get("/v1/offers", params=PARAMS).status_code for _ in range(BURST + 3)]
            redis_server.stop()
            during = [c.get("/v1/offers", params=PARAMS).status_code for _ in range(BURST + 3)]
    finally:
        service.stop()
    print(f"\nbefore the outage: {before}\nduring it: {during}")
    # Redis's bucket ran out...
    assert before.count(200) >= BURST and before[-1] == 429
    # ...and with Redis gone each request is still answered from the cache and counted here,
    # against a bucket of this process's own: never a 5xx, and the limit still holds.
    assert set(during) == {200, 429}
    assert BURST <= during.count(200) <= BURST + 2
    assert during[-1] == 429


def aof_size(server: RedisServer) -> int:
    info = server.cli("INFO", "persistence")
    return int(info.split("aof_current_size:")[1].split()[0])


def test_a_buckets_count_stays_out_of_the_append_only_file(redis_server: RedisServer) -> None:
    """A bucket's count is accounting of the last seconds, not data: it is kept out of the AOF
    (and the replicas), so one shopper's request, one script call, costs Redis no fsync under
    `appendfsync always`. A restart forgets the buckets: each starts full again."""
    buckets = [f"browser:10.0.0.{i}" for i in range(10)]

    async def lease_all(want: int) -> list[tuple[int, float]]:
        async with opened_redis(redis_server.url + RELAXED) as store:
            return [await store.rate_lease("st", b, PER_SECOND, BURST, want) for b in buckets]

    aof_before = aof_size(redis_server)
    asyncio.run(lease_all(BURST))  # each bucket empty: 20 requests, 5 s each to refill
    assert [r[0] for r in asyncio.run(lease_all(1))] == [0] * len(buckets)  # all counted
    assert all(bucket_exists(redis_server, "st", b) for b in buckets)
    assert aof_size(redis_server) == aof_before

    redis_server.stop()
    redis_server.start()
    assert [r[0] for r in asyncio.run(lease_all(BURST))] == [BURST] * len(buckets)


def test_a_bucket_counted_in_one_window_is_read_in_the_next(redis_server: RedisServer) -> None:
    """A bucket lives in the hash of the window its count was written in; the next window reads
    it there. One request every 2 s (burst 1): 2 s windows. The bucket is emptied in the second
    half of a window and asked again just after the next window began, well before it refills."""

    def redis_now() -> float:
        seconds, micros = redis_server.cli("TIME").split()
        return int(seconds) + int(micros) / 1e6

    bucket = [0]

    async def lease() -> tuple[int, float]:
        async with opened_redis(redis_server.url + RELAXED) as store:
            return await store.rate_lease("st", f"browser:10.0.0.{bucket[0]}", 0.5, 1, 1)

    for _ in range(5):  # a busy machine may oversleep: then try again with a new bucket
        bucket[0] += 1
        while not 1.0 <= redis_now() % 2 < 1.4:
            time.sleep(0.05)
        assert asyncio.run(lease()) == (1, 0.0)
        emptied = redis_now()
        time.sleep(2 - emptied % 2 + 0.05)  # into the next window
        asked = redis_now()
        if asked - emptied < 1.5 and int(asked / 2) == int(emptied / 2) + 1:
            break
    else:
        pytest.fail("never asked within the next window in time")
    granted, wait_s = asyncio.run(lease())
    assert granted == 0 and 0.3 < wait_s <= 2
    time.sleep(wait_s + 0.05)
    assert asyncio.run(lease()) == (1, 0.0)
