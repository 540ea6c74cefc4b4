"""Store versions as one service process sees them: never more than a second old.

Every cached candidate list is keyed by its store's version, so a catalog, rules or order change
made through any process (or a CLI import) is served by this one as soon as it reads the new
version. A version younger than `FRESH_S` is used as is; an older one is used while one
background read refreshes it; one older than `MAX_AGE_S` is awaited, so no request is ever
answered from a version read more than a second before it. When the store cannot be reached
the last version read is used (stale offers beat no offers) and the store is tried again on a
later request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from offer_service.exceptions import StoreUnavailable

FRESH_S = 0.5
MAX_AGE_S = 0.9


class Versions:
    """Per-store version cache with one read in flight per store."""

    def __init__(
        self,
        load: Callable[[str], Awaitable[int]],
        on_change: Callable[[str], Awaitable[None]],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        # Called before a changed version is published, so whatever else depends on the
        # version (the store's rules) is current by the time a request sees it.
        self._on_change = on_change
        self._clock = clock
        self._known: dict[str, tuple[int, float]] = {}
        self._loading: dict[str, asyncio.Task[int]] = {}

    def set(self, store_id: str, version: int) -> None:
        self._known[store_id] = (version, self._clock())

    def fresh(self, store_id: str) -> int | None:
        """The version while it is younger than FRESH_S, without a coroutine; None when `get`
        must decide."""
        known = self._known.get(store_id)
        if known is None or self._clock() - known[1] >= FRESH_S:
            return None
        return known[0]

    async def get(self, store_id: str) -> int:
        version = self.fresh(store_id)
        if version is not None:
            return version
        known = self._known.get(store_id)
        if known is not None and self._clock() - known[1] < MAX_AGE_S:
            self._refresh(store_id)
            return known[0]
        try:
            return await asyncio.shield(self._refresh(store_id))
        except StoreUnavailable:
            if known is None:
                raise
            return known[0]

    def _refresh(self, store_id: str) -> asyncio.Task[int]:
        task = self._loading.get(store_id)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._read(store_id))
            self._loading[store_id] = task
            task.add_done_callback(lambda t: self._done(store_id, t))
        return task

    def _done(self, store_id: str, task: asyncio.Task[int]) -> None:
        self._loading.pop(store_id, None)
        if not task.cancelled():
            task.exception()  # retrieved: a failed background read is not an error to log

    async def _read(self, store_id: str) -> int:
        started = self._clock()
        try:
            version = await self._load(store_id)
        except StoreUnavailable:
            known = self._known.get(store_id)
            if known is not None:
                # Serve the last version for a while without waiting on the store again.
                self._known[store_id] = (known[0], self._clock() - FRESH_S)
            raise
        known = self._known.get(store_id)
        if known is not None and known[0] != version:
            await self._on_change(store_id)
        # Dated from before the read: the version is at least this fresh.
        self._known[store_id] = (version, started)
        return version
