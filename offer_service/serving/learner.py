"""The learned P(accept) of every store asked about, refreshed off the request path."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from offer_service.decision.learning import (
    LEARNED_TYPES,
    ORDER_SETTLE_MS,
    REFRESH_S,
    Feedback,
    Learned,
    LearningConfig,
)
from offer_service.domain.records import StoreRecord
from offer_service.exceptions import StoreUnavailable
from offer_service.storage.protocols import Store
from offer_service.types import DAY_MS

log = logging.getLogger(__name__)


async def refresh(
    store: Store,
    store_id: str,
    previous: Feedback | None,
    now_ms: int,
    *,
    config: LearningConfig,
    window_ms: int,
) -> Feedback:
    """`previous` extended with the events and orders since it (a first load reads the
    horizon, and so does a change of half-life). Returns a new Feedback: the previous one may
    still be read meanwhile."""
    if previous is None or previous.config.half_life_days != config.half_life_days:
        # Counts faded at another half-life cannot be converted: fold the history again.
        since = now_ms - config.horizon_ms
        fb = Feedback(config, since, window_ms)
    else:
        fb = previous.copy()
        since = fb.as_of_ms
        fb.config = config
        fb.window_ms = window_ms
    fb.advance(now_ms)
    # Only the types it learns from: most of a busy store's events are exposures and views.
    async for e in store.iter_events(store_id, since, now_ms, LEARNED_TYPES):
        fb.add_event(e)
    orders_until = now_ms - ORDER_SETTLE_MS
    if orders_until > fb.orders_until_ms:
        orders = [o async for o in store.iter_orders(store_id, fb.orders_until_ms, orders_until)]
        fb.add_orders(orders, orders_until)
    return fb


@dataclass(slots=True)
class _Slot:
    feedback: Feedback | None = None
    learned: Learned | None = None
    config: LearningConfig | None = None  # of the last load started
    loaded_s: float = -math.inf
    task: asyncio.Task[None] | None = None
    unavailable: bool = False  # the last load found the store down (said once an outage)


class Learner:
    """Per-process learned state of every store asked about, refreshed off the request path."""

    def __init__(
        self,
        store: Store,
        config: LearningConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        refresh_s: float = REFRESH_S,
    ) -> None:
        self.store = store
        self.config = config or LearningConfig()
        self.clock = clock
        self.refresh_s = refresh_s
        self._slots: dict[str, _Slot] = {}

    def current(self, record: StoreRecord) -> Learned | None:
        """The store's latest snapshot, or None before its first load has finished. Never
        waits: a missing or stale snapshot, or a change of the store's learning settings, starts
        one background load (requires a running event loop), and the caller ranks with what
        there is meanwhile."""
        slot = self._slots.get(record.id)
        if slot is None:
            slot = self._slots[record.id] = _Slot()
        if slot.task is None and (
            self.clock() - slot.loaded_s >= self.refresh_s
            or slot.config != self.config.for_store(record.rules.learning)
        ):
            slot.task = asyncio.get_running_loop().create_task(self._load(record, slot))
        return slot.learned

    async def load(self, record: StoreRecord) -> Learned:
        """Refresh the store's snapshot now and return it (tests, warm-up)."""
        slot = self._slots.setdefault(record.id, _Slot())
        if slot.task is not None:
            await asyncio.shield(slot.task)
        else:
            await self._load(record, slot)
        return slot.learned or Learned({}, self.config.for_store(record.rules.learning))

    async def _load(self, record: StoreRecord, slot: _Slot) -> None:
        started = self.clock()
        slot.config = config = self.config.for_store(record.rules.learning)
        try:
            window_ms = record.rules.attribution_window_days * DAY_MS
            fb = await refresh(
                self.store,
                record.id,
                slot.feedback,
                int(started * 1000),
                config=config,
                window_ms=window_ms,
            )
            slot.feedback, slot.learned = fb, fb.snapshot()
        except StoreUnavailable as exc:
            # An outage the readiness check and the metrics already report: one line, no trace.
            if not slot.unavailable:
                slot.unavailable = True
                log.warning("learning refresh for store %s waits for the store: %s", record.id, exc)
        except Exception:
            # Keep ranking with the last snapshot (or the priors); retry after refresh_s.
            log.warning("learning refresh failed for store %s", record.id, exc_info=True)
        else:
            if slot.unavailable:
                slot.unavailable = False
                log.info("learning refresh for store %s works again", record.id)
        finally:
            slot.loaded_s = started
            slot.task = None
