"""A process's Redis connections: many more requests than connections wait for one (no error,
no breaker), and one that waits past its deadline is answered as a slow read is, from the cache.
Real redis-server processes (one server, a 3-master cluster) and the real app."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from offer_service.app import create_app
from offer_service.domain.policy import StoreRules
from offer_service.settings import Settings
from offer_service.storage.health import TIMEOUT
from offer_service.storage.redis.store import RedisStore
from offer_service_tools.demo import CATALOG, install_demo
from tests.conftest import BROWSER_UA
from tests.flows import PK, UNLIMITED
from tests.redis_servers import RedisClusterServers, RedisServer, opened_redis, running_redis

pytestmark = pytest.mark.timeout(240)

ORIGIN = "http://localhost:8000"  # one of the demo store's origins
# Generous deadlines: the machine running the suite is small and busy, and the pool's waits
# must come from the pool, not from a slow test process.
PATIENT = "?read_timeout_ms=5000&connect_timeout_ms=3000&events_timeout_ms=5000"
CONCURRENT = 400
SELLABLE = [p.id for p in CATALOG if "fee" not in p.flags and p.inventory != 0]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from running_redis(tmp_path / "redis")


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisClusterServers]:
    cluster = RedisClusterServers(tmp_path / "cluster")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


async def install_unlimited_demo(url: str) -> None:
    """The demo store, its rate limits lifted (every request here comes from one address)."""
    async with opened_redis(url) as store:
        record = await install_demo(store)
        merged = {**record.rules.model_dump(), "rate_limits": UNLIMITED}
        await store.set_rules(record.id, StoreRules.model_validate(merged))


@contextlib.asynccontextmanager
async def app_client(
    url: str, tmp_path: Path, pool_size: int | None
) -> AsyncIterator[tuple[httpx.AsyncClient, RedisStore]]:
    settings = Settings(store_url=url, redis_pool_size=pool_size, spool_dir=str(tmp_path / "sp"))
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    headers = {"User-Agent": BROWSER_UA, "Origin": ORIGIN}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers) as c,
    ):
        store = app.state.engine.store
        assert isinstance(store, RedisStore)
        yield c, store


async def many_requests(c: httpx.AsyncClient) -> list[tuple[str, int]]:
    """CONCURRENT requests at once: cold carts (a new pair of items each), product pages and
    event batches; (what, status) of each."""
    first = await c.get(
        "/v1/offers", params={"key": PK, "surface": "product_page", "product_id": "cam-x100"}
    )
    token = first.json()["offers"][0]["token"]
    pairs = itertools.cycle(itertools.combinations(SELLABLE, 2))
    now = int(time.time() * 1000)

    async def one(n: int) -> tuple[str, int]:
        if n % 3 == 0:
            items = ",".join(next(pairs))
            r = await c.get("/v1/offers", params={"key": PK, "surface": "cart", "items": items})
            return f"cart {items}", r.status_code
        if n % 3 == 1:
            pid = SELLABLE[n % len(SELLABLE)]
            params = {
                "key": PK,
                "surface": "product_page",
                "product_id": pid,
                "visitor_id": f"v{n}",
            }
            r = await c.get("/v1/offers", params=params)
            return f"product {pid}", r.status_code
        events = [
            {"id": f"pool-{n}-{i}", "type": "impression", "token": token, "ts": now}
            for i in range(5)
        ]
        r = await c.post("/v1/events", json={"key": PK, "events": events, "visitor_id": f"v{n}"})
        return "events", r.status_code

    return await asyncio.gather(*(one(n) for n in range(CONCURRENT)))


async def check_many_requests_on_a_small_pool(url: str, tmp_path: Path) -> None:
    await install_unlimited_demo(url)
    async with app_client(url, tmp_path, pool_size=2) as (c, store):
        answers = await many_requests(c)
        refused = [(what, status) for what, status in answers if status not in (200, 202)]
        assert refused == []
        assert dict(store.health.errors) == {}
        assert store.health.down_until == 0.0
        # The requests did queue for the two connections.
        assert store.fast_pool.waited > 0 and store.fast_pool.timed_out == 0


@pytest.mark.anyio
async def test_many_concurrent_requests_wait_for_a_small_pool_without_an_error(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    await check_many_requests_on_a_small_pool(redis_server.url + PATIENT, tmp_path)


@pytest.mark.anyio
async def test_many_concurrent_requests_wait_for_a_small_pool_on_a_cluster(
    redis_cluster: RedisClusterServers, tmp_path: Path
) -> None:
    await check_many_requests_on_a_small_pool(redis_cluster.url + PATIENT, tmp_path)


@pytest.mark.anyio
async def test_the_default_pool_takes_more_requests_than_connections_without_an_error(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # More requests in flight than redis-py's own pool (100 connections) would have allowed.
    await install_unlimited_demo(redis_server.url + PATIENT)
    async with app_client(redis_server.url + PATIENT, tmp_path, pool_size=None) as (c, store):
        answers = await many_requests(c)
        assert [a for a in answers if a[1] not in (200, 202)] == []
        assert dict(store.health.errors) == {}


@pytest.mark.anyio
async def test_a_pool_busy_past_the_deadline_answers_from_the_cache_not_as_an_outage(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    url = redis_server.url + "?read_timeout_ms=1000&connect_timeout_ms=3000"
    await install_unlimited_demo(url)
    async with app_client(url, tmp_path, pool_size=1) as (c, store):
        params = {"key": PK, "surface": "product_page", "product_id": "cam-x100"}
        warm = await c.get("/v1/offers", params=params)
        assert warm.status_code == 200 and warm.json()["offers"]
        await asyncio.sleep(1.2)  # the store's version is due to be read again

        async def hold() -> None:
            # A blocking pop holds the one connection for 0.9 s (within its own deadline).
            await store._read("hold a connection", lambda r: r.blpop(["nothing"], timeout=0.9))

        holders = [asyncio.create_task(hold()) for _ in range(2)]
        await asyncio.sleep(0.05)
        started = time.monotonic()
        cached = await c.get("/v1/offers", params=params)
        waited = time.monotonic() - started
        await asyncio.gather(*holders)

        assert cached.status_code == 200
        assert [o["product_id"] for o in cached.json()["offers"]] == [
            o["product_id"] for o in warm.json()["offers"]
        ]
        assert waited >= 0.9  # it did wait for a connection, until its deadline
        assert store.fast_pool.timed_out >= 1
        assert dict(store.health.errors) == {("read", TIMEOUT): store.fast_pool.timed_out}
        assert store.health.down_until == 0.0  # no breaker: the next request asks Redis
        assert (await c.get("/v1/offers", params=params)).status_code == 200
