"""The in-process cache: TTL, stale-while-revalidate, one load per key."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from offer_service.serving.local_cache import LocalCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.anyio
async def test_concurrent_misses_load_once() -> None:
    cache: LocalCache[str, int] = LocalCache(10, 10.0)
    calls = 0

    async def load() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return 42

    values = await asyncio.gather(*(cache.get("k", load) for _ in range(50)))
    assert values == [42] * 50
    assert calls == 1


@pytest.mark.anyio
async def test_an_expired_entry_is_served_stale_while_one_refresh_runs() -> None:
    clock = Clock()
    cache: LocalCache[str, int] = LocalCache(10, 1.0, jitter=0.0, clock=clock)
    version = 1
    calls = 0

    async def load() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        return version

    assert await cache.get("k", load) == 1
    clock.now = 5.0
    version = 2
    assert await cache.get("k", load) == 1  # stale, refresh started
    assert await cache.get("k", load) == 1  # still one refresh in flight
    await asyncio.sleep(0.01)
    assert await cache.get("k", load) == 2
    assert calls == 2


@pytest.mark.anyio
async def test_a_failed_refresh_keeps_the_stale_value() -> None:
    clock = Clock()
    cache: LocalCache[str, int] = LocalCache(10, 1.0, jitter=0.0, clock=clock)

    async def ok() -> int:
        return 7

    async def fail() -> int:
        raise RuntimeError("store down")

    assert await cache.get("k", ok) == 7
    clock.now = 2.0
    assert await cache.get("k", fail) == 7
    await asyncio.sleep(0.01)
    assert await cache.get("k", fail) == 7


@pytest.mark.anyio
async def test_a_failed_first_load_raises_to_every_waiter_and_is_not_cached() -> None:
    cache: LocalCache[str, int] = LocalCache(10, 1.0)

    async def fail() -> int:
        await asyncio.sleep(0.01)
        raise RuntimeError("boom")

    results = await asyncio.gather(
        *(cache.get("k", fail) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)
    assert cache.peek("k") is None


def test_ttl_is_jittered_within_bounds() -> None:
    clock = Clock()
    cache: LocalCache[str, int] = LocalCache(1000, 10.0, jitter=0.2, clock=clock)
    expiries = {cache._expiry() for _ in range(200)}
    assert min(expiries) >= 8.0 and max(expiries) <= 12.0
    assert len(expiries) > 100


@pytest.mark.anyio
async def test_fresh_answers_an_entry_until_it_expires_and_loads_nothing() -> None:
    clock = Clock()
    cache: LocalCache[str, int] = LocalCache(10, 1.0, jitter=0.0, clock=clock)
    assert cache.fresh("k") is None  # a miss: `get` must load it

    async def load() -> int:
        return 7

    assert await cache.get("k", load) == 7
    assert cache.fresh("k") == (7, 1.0)
    clock.now = 1.0
    assert cache.fresh("k") is None  # expired: `get` serves it stale and refreshes
    assert cache.peek("k") == 7


@pytest.mark.anyio
async def test_the_least_recently_used_entry_is_dropped_first() -> None:
    cache: LocalCache[str, int] = LocalCache(3, 10.0)
    for key in "abc":
        cache.set(key, ord(key))
    assert cache.fresh("a") is not None  # a hit: "b" is now the least recently used
    cache.set("d", 4)
    assert cache.peek("b") is None
    assert [cache.peek(k) for k in "acd"] == [ord("a"), ord("c"), 4]
    assert len(cache) == 3
    cache.set("c", 5)  # replacing an entry counts as a use and keeps the size
    cache.set("e", 6)
    assert cache.peek("a") is None and cache.peek("c") == 5 and len(cache) == 3


@pytest.mark.anyio
async def test_budgeted_refreshes_run_one_at_a_time_and_leave_the_loop_to_others() -> None:
    """Entries that expire together are refreshed one by one, each followed by a pause that
    keeps refreshing to its share of the loop; the stale values are served meanwhile."""
    clock = Clock()
    cache: LocalCache[int, int] = LocalCache(100, 1.0, jitter=0.0, clock=clock, refresh_share=0.5)
    for key in range(10):
        cache.set(key, 0)
    clock.now = 2.0
    running = most = 0
    ticks: list[int] = []

    async def reload() -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0)  # a store read
        ticks.append(0)
        busy_until = time.perf_counter() + 0.002
        while time.perf_counter() < busy_until:  # preparing the list
            pass
        running -= 1
        return 1

    assert [await cache.get(key, reload) for key in range(10)] == [0] * 10
    while cache.peek(9) != 1:
        ticks.append(1)
        await asyncio.sleep(0.0005)
    assert most == 1
    assert [cache.peek(key) for key in range(10)] == [1] * 10
    # Other work ran between every two refreshes.
    refreshes = [i for i, t in enumerate(ticks) if t == 0]
    assert all(b - a > 1 for a, b in itertools.pairwise(refreshes))
