"""Which visitors asked for offers, holdout or not: the denominators of the holdout comparison.

A holdout visitor gets no offers, so no token and no event of theirs can say they were there; the
server records it instead. Each offers request with a `visitor_id` notes an `exposure` event: one
per visitor, surface and UTC day (a deterministic event id, so the store's event dedupe keeps
one), with `kind` "holdout" or "treatment" and the visitor's experiment arm. A request from a
bot or a prefetch is noted with its flag (`traffic.py`) and an id of its own. Exposures are
written behind the request, in batches, so the offers path never waits on a store write; a
process that dies loses at most the last `FLUSH_AFTER_S` of them. While the store cannot be
reached they go to the event spool like any event, and are replayed when it answers again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from offer_service.domain.events import StoredEvent
from offer_service.exceptions import StoreUnavailable
from offer_service.storage.protocols import Store
from offer_service.types import DAY_MS

EXPOSURE = "exposure"
HOLDOUT = "holdout"
TREATMENT = "treatment"
FLUSH_AFTER_S = 0.25
# Remembered ids of exposures already written, so a busy visitor costs one set lookup: two
# generations of up to half this each. When the newer is full the older is forgotten, so what
# was noted within the last half of it is always remembered (a visitor's session of page views
# writes once, not once more each time the table fills).
RECENT_MAX = 200_000

log = logging.getLogger(__name__)


def exposure_id(visitor_id: str, surface: str, day: int) -> str:
    """The event id of a visitor's exposure on a surface on a UTC day (epoch days)."""
    digest = hashlib.blake2b(f"{visitor_id}\x00{surface}\x00{day}".encode(), digest_size=12)
    return "x_" + base64.urlsafe_b64encode(digest.digest()).decode("ascii")


def exposure(
    visitor_id: str,
    surface: str,
    *,
    holdout: bool,
    arm: str | None,
    at_ms: int,
    flag: str | None = None,
) -> StoredEvent:
    """The exposure event. A flagged one (a bot's or a prefetch's request) has an id of its own,
    so it never takes the place of the visitor's real exposure that day."""
    event_id = exposure_id(visitor_id, surface, at_ms // DAY_MS)
    return StoredEvent(
        id=event_id if flag is None else f"{event_id}:{flag}",
        type=EXPOSURE,
        ts_ms=at_ms,
        received_ms=at_ms,
        visitor_id=visitor_id,
        surface=surface,
        kind=HOLDOUT if holdout else TREATMENT,
        product_id="",
        offer_id="",
        order_id=None,
        arm=arm,
        offer_price=0,
        currency="",
        flag=flag,
    )


class Spool(Protocol):
    """Where events go while the store is unreachable (serving/spool.py)."""

    async def append(
        self, store_id: str, events: Sequence[StoredEvent], dedupe_since_ms: int
    ) -> None: ...


class ExposureLog:
    """Write-behind exposure events: `seen` never blocks; a background task writes batches."""

    def __init__(
        self,
        store: Store,
        *,
        flush_after_s: float = FLUSH_AFTER_S,
        clock: Callable[[], float] = time.time,
        spool: Spool | None = None,
        recent_max: int = RECENT_MAX,
    ) -> None:
        """`recent_max`: exposures remembered as written (in two generations, see RECENT_MAX)."""
        self.store = store
        self.recent_max = recent_max
        self.spool = spool
        self.flush_after_s = flush_after_s
        self.clock = clock
        self._pending: dict[str, list[StoredEvent]] = {}
        self._recent: set[tuple[str, str, str, int, str | None]] = set()
        self._older: set[tuple[str, str, str, int, str | None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._closing = asyncio.Event()
        # For the metrics: exposures neither stored nor spooled (a visitor's next request on
        # the surface notes it again).
        self.dropped = 0
        # Whether exposures are being spooled: one warning an outage, not one a batch.
        self._spooling = False

    def seen(
        self,
        store_id: str,
        visitor_id: str,
        surface: str,
        *,
        holdout: bool,
        arm: str | None,
        flag: str | None = None,
    ) -> None:
        """Note that the visitor asked for offers on `surface` (call from the event loop); a
        `flag` (traffic.REASONS) marks a request that is no shopper's view."""
        at_ms = int(self.clock() * 1000)
        # What the event id is a hash of: a repeat visit costs no hashing.
        key = (store_id, visitor_id, surface, at_ms // DAY_MS, flag)
        recent = self._recent
        if key in recent:
            return
        if len(recent) >= self.recent_max // 2:
            self._older, self._recent = recent, set()
            recent = self._recent
        if key in self._older:
            recent.add(key)  # still busy: kept through the next turn
            return
        recent.add(key)
        event = exposure(visitor_id, surface, holdout=holdout, arm=arm, at_ms=at_ms, flag=flag)
        self._pending.setdefault(store_id, []).append(event)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        # Exposures noted while a flush is under way find this task running and start no
        # other: it goes on until nothing is pending, or the last of a burst (a store slow to
        # answer or to spool) would wait in memory for the next exposure, or the shutdown.
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.flush_after_s)
            await self.flush()
            if not self._pending or self._closing.is_set():
                return

    async def flush(self) -> None:
        """Write every pending exposure now (the report calls this before reading)."""
        async with self._lock:
            pending, self._pending = self._pending, {}
            for store_id, events in pending.items():
                since_ms = int(self.clock() * 1000) - DAY_MS
                try:
                    await self.store.record_events(store_id, events, since_ms)
                except StoreUnavailable as exc:
                    if not await self._spooled(store_id, events, since_ms, exc):
                        self._forget(store_id, events)
                except Exception:
                    log.exception("could not record %d exposures", len(events))
                    self._forget(store_id, events)
                else:
                    if self._spooling:
                        self._spooling = False
                        log.info("exposures are written to the store again")

    async def _spooled(
        self,
        store_id: str,
        events: Sequence[StoredEvent],
        since_ms: int,
        exc: StoreUnavailable,
    ) -> bool:
        """Keep exposures the store could not take in the spool; whether they are kept."""
        if self.spool is not None:
            try:
                await self.spool.append(store_id, events, since_ms)
            except OSError as spool_exc:
                log.warning("could not spool %d exposures: %s", len(events), spool_exc)
                return False
            if not self._spooling:
                self._spooling = True
                log.warning("exposures go to the spool until the store answers again: %s", exc)
            return True
        log.warning("could not record %d exposures: %s", len(events), exc)
        return False

    def _forget(self, store_id: str, events: Sequence[StoredEvent]) -> None:
        """Forget exposures that were not kept, so the visitors' next requests note them again."""
        self.dropped += len(events)
        for e in events:
            key = (store_id, e.visitor_id or "", e.surface, e.ts_ms // DAY_MS, e.flag)
            self._recent.discard(key)
            self._older.discard(key)

    async def close(self) -> None:
        """Write what is pending now and wait for it (at shutdown)."""
        self._closing.set()
        if self._task is not None:
            await self._task
        await self.flush()
