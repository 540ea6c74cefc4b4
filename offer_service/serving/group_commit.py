"""Group commit of event batches: concurrent `record_events` calls for a store share one write.

While one batch is being written, the batches that arrive for the same store wait; when the write
returns, everything that waited goes to the store in a single call (one transaction on SQLite, one
pipeline on Redis) and each caller gets its own part of the answer. A caller is answered only
after the write that holds its events has committed, so an acknowledged event is durable exactly
as before; a lone batch on an idle store is written at once, without waiting for company.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from offer_service.domain.events import StoredEvent
from offer_service.storage.protocols import Store

# At most this many events in one write: a burst is written in parts, not one huge transaction.
MAX_EVENTS_PER_WRITE = 2_000


@dataclass(slots=True)
class _Waiting:
    events: Sequence[StoredEvent]
    dedupe_since_ms: int
    answer: asyncio.Future[list[bool]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class GroupCommit:
    """`record_events` with the Store's signature and answers, grouping concurrent callers."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._waiting: dict[str, list[_Waiting]] = {}
        self._writers: set[asyncio.Task[None]] = set()
        self._writing: set[str] = set()

    async def record_events(
        self, store_id: str, events: Sequence[StoredEvent], dedupe_since_ms: int
    ) -> list[bool]:
        if not events:
            return []
        waiting = _Waiting(events, dedupe_since_ms)
        self._waiting.setdefault(store_id, []).append(waiting)
        if store_id not in self._writing:
            self._writing.add(store_id)
            task = asyncio.get_running_loop().create_task(self._write(store_id))
            self._writers.add(task)
            task.add_done_callback(self._writers.discard)
        # The write goes on if this caller goes away: other callers' events are in it too.
        return await asyncio.shield(waiting.answer)

    async def _write(self, store_id: str) -> None:
        try:
            while self._waiting.get(store_id):
                group = self._take(store_id)
                events = [e for w in group for e in w.events]
                since = min(w.dedupe_since_ms for w in group)
                try:
                    fresh = await self.store.record_events(store_id, events, since)
                except Exception as exc:
                    for w in group:
                        w.answer.set_exception(exc)
                        w.answer.exception()  # retrieved: no "never retrieved" warning
                    continue
                except BaseException:
                    for w in group:
                        w.answer.cancel()
                    raise
                start = 0
                for w in group:
                    w.answer.set_result(fresh[start : start + len(w.events)])
                    start += len(w.events)
        finally:
            self._writing.discard(store_id)
            for w in self._waiting.pop(store_id, []):  # only if cancelled mid-way
                w.answer.cancel()

    def _take(self, store_id: str) -> list[_Waiting]:
        """The waiting batches of the next write, oldest first, up to MAX_EVENTS_PER_WRITE
        events (a single bigger batch goes alone)."""
        queue = self._waiting[store_id]
        taken, count = 0, 0
        while taken < len(queue) and (
            taken == 0 or count + len(queue[taken].events) <= MAX_EVENTS_PER_WRITE
        ):
            count += len(queue[taken].events)
            taken += 1
        group, self._waiting[store_id] = queue[:taken], queue[taken:]
        return group
