"""How many commands a Redis client has in flight at once: a pool of slots, waited for.

redis-py's asyncio pools refuse a command outright once every connection is in use ("Too many
connections", a ConnectionError), which read as "Redis is down": the breaker tripped and a
merely busy process answered 503. Here a call first takes one of `size` slots, waiting for one
within its own deadline; the client's connection pool is allowed a few more connections than
slots (a cluster client also talks to nodes to learn the topology), so redis-py itself never runs
out. A call that found no slot in time fails as a slow reply does (`PoolBusy`, a timeout: the
engine answers from its cache), never as an outage.

Each call holds one connection (a pipeline or a script is one call), so `size` bounds the
connections a process opens to each node, and the connections of every process together stay
under Redis's `maxclients` (10,000 by default).
"""

from __future__ import annotations

import asyncio

# The default pool: the process's concurrency limit (each request waits on one command at a
# time), at most this. Redis runs one command at a time, so past a few dozen connections a
# process gains nothing but queueing in Redis instead of here.
POOL_SIZE_MAX_DEFAULT = 64
# Connections redis-py may open beyond the slots (cluster topology refreshes).
POOL_HEADROOM = 4
POOL_BUSY = "every Redis connection of this process stayed busy until the deadline"


class PoolBusy(TimeoutError):
    """No slot came free before the call's deadline."""


def default_pool_size(concurrency_limit: int) -> int:
    """The slots of each client when none is configured."""
    return max(1, min(concurrency_limit, POOL_SIZE_MAX_DEFAULT))


class Pool:
    """`size` slots; `slot(wait_s)` holds one for the block, waiting at most `wait_s`."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a pool needs at least one connection, not {size}")
        self.size = size
        self._free = asyncio.Semaphore(size)
        # For the metrics and the tests: calls that had to wait, and that waited in vain.
        self.waited = 0
        self.timed_out = 0

    def slot(self, wait_s: float | None) -> Slot:
        """`async with pool.slot(wait_s):` holds a slot for the block."""
        return Slot(self, wait_s)


class Slot:
    """One call's hold on a slot of `pool` (a class, not a generator-based context manager:
    this runs for every Redis command, and a generator costs a few microseconds more)."""

    __slots__ = ("pool", "wait_s")

    def __init__(self, pool: Pool, wait_s: float | None) -> None:
        self.pool, self.wait_s = pool, wait_s

    async def __aenter__(self) -> None:
        pool = self.pool
        free = pool._free
        if free.locked():
            pool.waited += 1
            try:
                async with asyncio.timeout(self.wait_s):
                    await free.acquire()
            except TimeoutError:
                pool.timed_out += 1
                raise PoolBusy(POOL_BUSY) from None
        else:
            # Free now: no timer to set up (the common case on the hot path).
            await free.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.pool._free.release()
