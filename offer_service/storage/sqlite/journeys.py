"""SQLite tables of post-purchase journeys: order lifecycle events, SMS consent, feed keys and
tracked short links."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

import orjson

from offer_service.domain.lifecycle import (
    ConsentStatus,
    OrderEvent,
    OrderEventType,
    ShortLink,
    SmsConsent,
)
from offer_service.exceptions import StoreError

T = TypeVar("T")

# Split on ";" by the migration, so comments in it must not hold one.
SCHEMA = """
-- product_ids: JSON list, sorted. A redelivered webhook is the same row.
CREATE TABLE IF NOT EXISTS order_events (
    store_id TEXT NOT NULL,
    order_id TEXT NOT NULL,
    type TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    product_ids TEXT NOT NULL,
    PRIMARY KEY (store_id, order_id, type, at_ms, product_ids)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS sms_consent (
    store_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    status TEXT NOT NULL,
    source TEXT NOT NULL,
    PRIMARY KEY (store_id, customer_id, at_ms, status, source)
) WITHOUT ROWID;

-- position 0 is the current feed key, 1 the previous one (valid until the next rotation).
CREATE TABLE IF NOT EXISTS feed_keys (
    key TEXT PRIMARY KEY,
    store_id TEXT NOT NULL,
    position INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS feed_keys_by_store ON feed_keys (store_id, position);

-- Codes are global (a link names no store). data: the ShortLink as JSON.
CREATE TABLE IF NOT EXISTS short_links (
    code TEXT PRIMARY KEY,
    store_id TEXT NOT NULL,
    data BLOB NOT NULL
) WITHOUT ROWID
"""


def _require_store(conn: sqlite3.Connection, store_id: str) -> None:
    if conn.execute("SELECT 1 FROM stores WHERE id = ?", (store_id,)).fetchone() is None:
        raise StoreError(f"unknown store {store_id!r}")


class SQLiteJourneys:
    """Mixed into SQLiteStore: the journey parts of the Store protocol."""

    if TYPE_CHECKING:

        def _query(self, action: str, sql: str, params: Any = ()) -> list[Any]: ...
        async def _write(self, action: str, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    async def add_order_event(self, store_id: str, event: OrderEvent) -> bool:
        ids = orjson.dumps(sorted(set(event.product_ids))).decode()

        def insert(conn: sqlite3.Connection) -> bool:
            _require_store(conn, store_id)
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
            _require_store(conn, store_id)
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
            _require_store(conn, store_id)
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
        rows = [(link.code, store_id, orjson.dumps(link)) for link in links]

        def insert(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT OR IGNORE INTO short_links (code, store_id, data) VALUES (?, ?, ?)", rows
            )

        await self._write("store short links", insert)

    async def short_link(self, code: str) -> ShortLink | None:
        rows = self._query(
            "resolve a short link", "SELECT data FROM short_links WHERE code = ?", (code,)
        )
        return ShortLink(**orjson.loads(rows[0][0])) if rows else None
