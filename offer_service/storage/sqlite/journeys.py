"""SQLite's JourneyStore: order lifecycle events, SMS consent, feed keys and short links."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import cast

import orjson

from offer_service.domain.lifecycle import (
    ConsentStatus,
    OrderEvent,
    OrderEventType,
    ShortLink,
    SmsConsent,
)
from offer_service.storage.codec import dump_short_link, load_short_link
from offer_service.storage.sqlite.connection import SQLiteConnection, require_store


class SQLiteJourneys(SQLiteConnection):
    """The JourneyStore part of the Store protocol."""

    async def add_order_event(self, store_id: str, event: OrderEvent) -> bool:
        ids = orjson.dumps(sorted(set(event.product_ids))).decode()

        def insert(conn: sqlite3.Connection) -> bool:
            require_store(conn, store_id)
            cursor = conn.execute(
                "INSERT OR IGNORE INTO order_events (store_id, order_id, type, at_ms, product_ids)"
                " VALUES (?, ?, ?, ?, ?)",
                (store_id, event.order_id, event.type, event.at_ms, ids),
            )
            return cursor.rowcount == 1

        return await self._write("record an order event", insert)

    async def order_events(self, store_id: str, order_id: str) -> list[OrderEvent]:
        rows = self._query(
            "read order events",
            "SELECT type, at_ms, product_ids FROM order_events WHERE store_id = ? AND order_id = ?"
            " ORDER BY at_ms, type, product_ids",
            (store_id, order_id),
        )
        return [
            OrderEvent(order_id, cast(OrderEventType, kind), at_ms, tuple(orjson.loads(ids)))
            for kind, at_ms, ids in rows
        ]

    async def add_sms_consent(self, store_id: str, consent: SmsConsent) -> bool:
        def insert(conn: sqlite3.Connection) -> bool:
            require_store(conn, store_id)
            cursor = conn.execute(
                "INSERT OR IGNORE INTO sms_consent (store_id, customer_id, at_ms, status, source)"
                " VALUES (?, ?, ?, ?, ?)",
                (store_id, consent.customer_id, consent.at_ms, consent.status, consent.source),
            )
            return cursor.rowcount == 1

        return await self._write("record SMS consent", insert)

    async def sms_consents(self, store_id: str, customer_id: str) -> list[SmsConsent]:
        rows = self._query(
            "read SMS consent",
            "SELECT at_ms, status, source FROM sms_consent WHERE store_id = ? AND customer_id = ?"
            " ORDER BY at_ms, status, source",
            (store_id, customer_id),
        )
        return [
            SmsConsent(customer_id, cast(ConsentStatus, status), at_ms, source)
            for at_ms, status, source in rows
        ]

    async def rotate_feed_key(self, store_id: str, new_key: str) -> tuple[str, ...]:
        def rotate(conn: sqlite3.Connection) -> None:
            require_store(conn, store_id)
            conn.execute("DELETE FROM feed_keys WHERE store_id = ? AND position >= 1", (store_id,))
            conn.execute("UPDATE feed_keys SET position = 1 WHERE store_id = ?", (store_id,))
            conn.execute(
                "INSERT INTO feed_keys (key, store_id, position) VALUES (?, ?, 0)",
                (new_key, store_id),
            )

        await self._write("rotate the feed key", rotate)
        return await self.feed_keys(store_id)

    async def feed_keys(self, store_id: str) -> tuple[str, ...]:
        rows = self._query(
            "read feed keys",
            "SELECT key FROM feed_keys WHERE store_id = ? ORDER BY position",
            (store_id,),
        )
        return tuple(key for (key,) in rows)

    async def store_by_feed_key(self, feed_key: str) -> str | None:
        rows = self._query(
            "resolve a feed key", "SELECT store_id FROM feed_keys WHERE key = ?", (feed_key,)
        )
        return str(rows[0][0]) if rows else None

    async def put_short_links(self, store_id: str, links: Sequence[ShortLink]) -> None:
        if not links:
            return
        rows = [(link.code, store_id, dump_short_link(link)) for link in links]

        def insert(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT OR IGNORE INTO short_links (code, store_id, data) VALUES (?, ?, ?)", rows
            )

        await self._write("store short links", insert)

    async def short_link(self, code: str) -> ShortLink | None:
        rows = self._query(
            "resolve a short link", "SELECT data FROM short_links WHERE code = ?", (code,)
        )
        return load_short_link(rows[0][0]) if rows else None
