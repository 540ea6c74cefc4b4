"""An in-process TTL cache with jittered expiry, stale-while-revalidate and one load per key.

Entries past their TTL are still served while one background refresh runs (so a slow or
unavailable store never stalls a request that has something to answer with); a missing key is
loaded once however many requests ask for it at the same moment (no stampede). With a
`refresh_share`, background refreshes run one at a time and take at most that share of the
event loop's time: entries filled together (a process's first minute) expire together, and
their refreshes, run all at once, would hold requests in a queue behind them.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LocalCache(Generic[K, V]):
    def __init__(
        self,
        maxsize: int,
        ttl: float,
        *,
        jitter: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
        refresh_share: float | None = None,
    ) -> None:
        # Least recently used first: a hit moves its key to the end, an insert past `maxsize`
        # drops the first. OrderedDict does both in C; with cachetools' LRUCache, whose every
        # read runs several Python calls, a warm offers request cost 1.5-3 us more (in process,
        # four interleaved pairs), and the hot path reads three or four entries.
        self._entries: OrderedDict[K, tuple[V, float]] = OrderedDict()
        self._maxsize = maxsize
        self._ttl = ttl
        self._jitter = jitter
        self._clock = clock
        self._inflight: dict[K, asyncio.Future[V]] = {}
        self._refreshing: set[K] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._refresh_share = refresh_share
        self._queue: deque[tuple[K, Callable[[], Awaitable[V]]]] = deque()
        self._refresher: asyncio.Task[None] | None = None
        # For the metrics: reads answered from the cache (fresh or stale), and loads.
        self.hits = 0
        self.misses = 0

    def _expiry(self) -> float:
        # Jitter spreads the expiry of entries filled together, so they do not all reload at once.
        return self._clock() + self._ttl * (1.0 + random.uniform(-self._jitter, self._jitter))

    def peek(self, key: K) -> V | None:
        """The cached value (fresh or stale) without loading."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def fresh(self, key: K, *, count: bool = True) -> tuple[V, float] | None:
        """The entry (value, expiry) while it has not expired, without a coroutine: what a
        warm request reads. None when `get` must decide (a miss, or stale). `count`: whether
        it counts as a hit (else the caller adds it to `hits` once the entry is used)."""
        entry = self._entries.get(key)
        if entry is None or entry[1] <= self._clock():
            return None
        self._entries.move_to_end(key)
        if count:
            self.hits += 1
        return entry

    def set(self, key: K, value: V) -> None:
        self._entries[key] = (value, self._expiry())
        self._entries.move_to_end(key)
        if len(self._entries) > self._maxsize:
            self._entries.popitem(last=False)

    def invalidate(self, key: K | None = None) -> None:
        if key is None:
            self._entries.clear()
        else:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)

    def held(
        self, key: K, loader: Callable[[], Awaitable[V]], *, count: bool = True
    ) -> tuple[V, float] | None:
        """`get`'s answer without a coroutine when the key has an entry: the entry (value,
        expiry), fresh or stale, a stale one refreshed in the background. None on a miss.
        `count`: whether it counts as a hit (else the caller adds it to `hits`)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if count:
            self.hits += 1
        self._entries.move_to_end(key)
        if entry[1] <= self._clock() and key not in self._refreshing:
            self._refresh_in_background(key, loader)
        return entry

    async def get(self, key: K, loader: Callable[[], Awaitable[V]]) -> V:
        entry = self.held(key, loader)
        if entry is not None:
            return entry[0]
        self.misses += 1
        future = self._inflight.get(key)
        if future is not None:
            return await asyncio.shield(future)
        future = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            value = await loader()
        except BaseException as exc:
            future.set_exception(exc)
            # Nobody else may be waiting; retrieve it so asyncio does not log it as unhandled.
            future.exception()
            raise
        else:
            self.set(key, value)
            future.set_result(value)
            return value
        finally:
            del self._inflight[key]

    def _refresh_in_background(self, key: K, loader: Callable[[], Awaitable[V]]) -> None:
        self._refreshing.add(key)
        if self._refresh_share is not None:
            self._queue.append((key, loader))
            if self._refresher is None:
                self._refresher = self._start(self._refresh_queued(self._refresh_share))
            return
        self._start(self._refresh(key, loader))

    def _start(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _refresh(self, key: K, loader: Callable[[], Awaitable[V]]) -> None:
        try:
            self.set(key, await loader())
        except Exception:
            # Keep serving the stale value; the next request after expiry tries again.
            entry = self._entries.get(key)
            if entry is not None:
                self._entries[key] = (entry[0], self._clock() + min(self._ttl, 1.0))
        finally:
            self._refreshing.discard(key)

    async def _refresh_queued(self, share: float) -> None:
        """The queued refreshes one at a time, each followed by a pause that keeps them to
        `share` of the loop's time (the stale values are served meanwhile)."""
        try:
            while self._queue:
                key, loader = self._queue.popleft()
                started = time.perf_counter()
                await self._refresh(key, loader)
                await asyncio.sleep((time.perf_counter() - started) * (1.0 / share - 1.0))
        finally:
            self._refresher = None
