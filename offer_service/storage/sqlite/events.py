"""SQLite's EventStore: shopper events into the log, counters and the charged accepts."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from functools import partial
from typing import Any

from offer_service.domain.events import StoredEvent
from offer_service.domain.orders import AcceptedOffer
from offer_service.storage.codec import load_event
from offer_service.storage.slices import Slices
from offer_service.storage.sqlite import event_log
from offer_service.storage.sqlite.connection import SQLiteConnection, in_transaction


class SQLiteEvents(SQLiteConnection):
    """The EventStore part of the Store protocol."""

    async def record_events(
        self, store_id: str, events: Sequence[StoredEvent], dedupe_since_ms: int
    ) -> list[bool]:
        if not events:
            return []
        ids = self._event_ids

        def write(conn: sqlite3.Connection) -> list[bool]:
            # The ids are noted here, in the writer's thread once the commit returns: even if
            # the caller has gone away meanwhile, the next write knows them.
            written = in_transaction(
                partial(event_log.record_events, store_id, events, dedupe_since_ms, ids), conn
            )
            if written.seq:
                ids.add(written.seq, written.last_ms, written.keys)
            return written.fresh

        return await self._on_writer("record events", write)

    async def event_counters(self, store_id: str) -> dict[tuple[str, str, str, str, str], int]:
        rows = self._query(
            "read event counters",
            "SELECT surface, kind, product_id, arm, type, n FROM event_counters WHERE store_id = ?",
            (store_id,),
        )
        return {(s, k, p, a, t): n for s, k, p, a, t, n in rows}

    async def iter_events(
        self,
        store_id: str,
        since_ms: int,
        until_ms: int,
        types: frozenset[str] | None = None,
    ) -> AsyncIterator[StoredEvent]:
        rows = self._query(
            "read events",
            "SELECT events FROM event_log WHERE store_id = ? AND last_ms >= ? AND first_ms < ?",
            (store_id, since_ms, until_ms),
        )
        # Decoded on the loop's thread (the reader is this thread's), giving the loop back
        # every few milliseconds: a row holds up to a group commit's events.
        give_back = Slices()
        found: list[tuple[Any, ...]] = []
        for (events,) in rows:
            found.extend(event_log.received_in(events, since_ms, until_ms, types))
            await give_back()
        found.sort(key=event_log.received_order)
        for row in found:
            yield load_event(row)
            await give_back()

    async def iter_accepts(
        self, store_id: str, since_ms: int, until_ms: int
    ) -> AsyncIterator[AcceptedOffer]:
        rows = self._query(
            "read accepts",
            "SELECT order_id, product_id, charge_id, updated_ms FROM accepts WHERE store_id = ?"
            " AND state = 'charged' AND updated_ms >= ? AND updated_ms < ?"
            " ORDER BY updated_ms, order_id, product_id",
            (store_id, since_ms, until_ms),
        )
        for row in rows:
            yield AcceptedOffer(*row)
