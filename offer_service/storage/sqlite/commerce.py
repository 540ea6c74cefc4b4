"""SQLite tables where money and measurement meet: events, idempotency keys and accepts."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from offer_service.domain.orders import AcceptedOffer, OrderLine
from offer_service.domain.records import IdempotencyClaim, Reservation, SigningKey, StoreRecord
from offer_service.storage.sqlite import events as events_log
from offer_service.storage.sqlite.events import SCHEMA as EVENTS_SCHEMA

if TYPE_CHECKING:
    from offer_service.domain.events import StoredEvent

T = TypeVar("T")

_IMPRESSIONS_SEEN = """
-- The latest valid (unflagged) impression of each offer by each visitor, '' for none: what a
-- click, accept or decline needs to be valid. It grows with the pairs, not with the impressions.
-- Keyed by visitor first: a page view's impressions (one visitor, offers with random ids) land
-- side by side, not each on a page of its own.
CREATE TABLE IF NOT EXISTS impressions_seen (
    store_id TEXT NOT NULL,
    visitor_id TEXT NOT NULL,
    offer_id TEXT NOT NULL,
    last_ms INTEGER NOT NULL,
    PRIMARY KEY (store_id, visitor_id, offer_id)
) WITHOUT ROWID
"""

SCHEMA = (
    EVENTS_SCHEMA
    + ";"
    + _IMPRESSIONS_SEEN
    + """;

CREATE TABLE IF NOT EXISTS event_counters (
    store_id TEXT NOT NULL,
    surface TEXT NOT NULL,
    kind TEXT NOT NULL,
    product_id TEXT NOT NULL,
    arm TEXT NOT NULL,
    type TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (store_id, surface, kind, product_id, arm, type)
) WITHOUT ROWID;

-- state: 'running' (owner holds it since started_ms) or 'done' (status and body replayable).
CREATE TABLE IF NOT EXISTS idempotency (
    store_id TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    owner TEXT NOT NULL,
    state TEXT NOT NULL,
    status INTEGER NOT NULL DEFAULT 0,
    body BLOB NOT NULL DEFAULT x'',
    started_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    PRIMARY KEY (store_id, key)
) WITHOUT ROWID;

-- One row per offer accepted (or being accepted) on an order. state: 'reserved' or 'charged'.
CREATE TABLE IF NOT EXISTS accepts (
    store_id TEXT NOT NULL,
    order_id TEXT NOT NULL,
    product_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    state TEXT NOT NULL,
    charge_id TEXT,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (store_id, order_id, product_id)
) WITHOUT ROWID
"""
)

# The first schema with impressions_seen: a file older than it fills the table from its events.
IMPRESSIONS_SEEN_SINCE = 5
# The first schema with impressions_seen keyed by visitor first: an older one is rebuilt.
VISITOR_FIRST_SINCE = 7
# impressions_seen as schemas 5 and 6 made it: the offer the second column of its key.
_KEYED_BY_OFFER = (
    "SELECT 1 FROM pragma_table_info('impressions_seen') WHERE name = 'offer_id' AND pk = 2"
)


def upgrade(conn: sqlite3.Connection, found: int) -> None:
    """Bring the events of a file at schema `found` up to this schema (inside the migration)."""
    if found < VISITOR_FIRST_SINCE and conn.execute(_KEYED_BY_OFFER).fetchone():
        conn.execute("ALTER TABLE impressions_seen RENAME TO impressions_seen_by_offer")
        conn.execute(_IMPRESSIONS_SEEN)
        conn.execute(
            "INSERT INTO impressions_seen (store_id, visitor_id, offer_id, last_ms)"
            " SELECT store_id, visitor_id, offer_id, last_ms FROM impressions_seen_by_offer"
        )
        conn.execute("DROP TABLE impressions_seen_by_offer")
    if not conn.execute("SELECT 1 FROM sqlite_schema WHERE name = 'events'").fetchone():
        return  # its events are in the log already
    columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
    if "flag" not in columns:
        conn.execute("ALTER TABLE events ADD COLUMN flag TEXT")
    # Impressions stored before impressions_seen existed still make later actions valid; a file
    # that has the table keeps it as it stands (reading every impression again is not needed).
    if found < IMPRESSIONS_SEEN_SINCE:
        conn.execute(
            "INSERT OR REPLACE INTO impressions_seen (store_id, visitor_id, offer_id, last_ms)"
            " SELECT store_id, COALESCE(visitor_id, ''), offer_id, MAX(received_ms) FROM events"
            " WHERE type = 'impression' AND flag IS NULL GROUP BY 1, 2, 3"
        )
    events_log.upgrade(conn)


class SQLiteCommerce:
    """Mixed into SQLiteStore: the event, idempotency and accept parts of the Store protocol."""

    if TYPE_CHECKING:

        def _query(self, action: str, sql: str, params: Any = ()) -> list[Any]: ...
        async def _write(self, action: str, fn: Callable[[sqlite3.Connection], T]) -> T: ...
        async def _on_writer(self, action: str, fn: Callable[[sqlite3.Connection], T]) -> T: ...

        _event_ids: events_log.EventIds

        async def get_store(self, store_id: str) -> StoreRecord | None: ...

    async def record_events(
        self, store_id: str, events: Sequence[StoredEvent], dedupe_since_ms: int
    ) -> list[bool]:
        if not events:
            return []
        ids = self._event_ids

        def write(conn: sqlite3.Connection) -> list[bool]:
            # The ids are noted here, in the writer's thread once the commit returns: even if
            # the caller has gone away meanwhile, the next write knows them.
            written = events_log.in_transaction(
                partial(events_log.record_events, store_id, events, dedupe_since_ms, ids), conn
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
        self, store_id: str, since_ms: int, until_ms: int
    ) -> AsyncIterator[StoredEvent]:
        from offer_service.domain.events import StoredEvent

        rows = self._query(
            "read events",
            "SELECT events FROM event_log WHERE store_id = ? AND last_ms >= ? AND first_ms < ?",
            (store_id, since_ms, until_ms),
        )
        for row in events_log.received_between(rows, since_ms, until_ms):
            yield StoredEvent(*row)

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

    async def claim_idempotency(
        self,
        store_id: str,
        key: str,
        fingerprint: str,
        owner: str,
        now_ms: int,
        *,
        lease_ms: int,
        ttl_ms: int,
    ) -> IdempotencyClaim:
        def claim(conn: sqlite3.Connection) -> IdempotencyClaim:
            row = conn.execute(
                "SELECT fingerprint, state, status, body, started_ms, expires_ms FROM idempotency"
                " WHERE store_id = ? AND key = ?",
                (store_id, key),
            ).fetchone()
            if row is not None and row[5] <= now_ms:
                conn.execute(
                    "DELETE FROM idempotency WHERE store_id = ? AND key = ?", (store_id, key)
                )
                row = None
            if row is None:
                conn.execute(
                    "INSERT INTO idempotency (store_id, key, fingerprint, owner, state,"
                    " started_ms, expires_ms) VALUES (?, ?, ?, ?, 'running', ?, ?)",
                    (store_id, key, fingerprint, owner, now_ms, now_ms + ttl_ms),
                )
                return IdempotencyClaim("claimed")
            found_fingerprint, state, status, body, started_ms, _ = row
            if found_fingerprint != fingerprint:
                return IdempotencyClaim("mismatch")
            if state == "done":
                return IdempotencyClaim("done", status, bytes(body))
            if now_ms - started_ms < lease_ms:
                return IdempotencyClaim("in_progress")
            # The owner died mid-request: take the claim over.
            conn.execute(
                "UPDATE idempotency SET owner = ?, started_ms = ? WHERE store_id = ? AND key = ?",
                (owner, now_ms, store_id, key),
            )
            return IdempotencyClaim("claimed")

        return await self._write("claim an idempotency key", claim)

    async def complete_idempotency(
        self, store_id: str, key: str, owner: str, status: int, body: bytes
    ) -> None:
        def complete(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE idempotency SET state = 'done', status = ?, body = ?"
                " WHERE store_id = ? AND key = ? AND owner = ?",
                (status, body, store_id, key, owner),
            )

        await self._write("complete an idempotency key", complete)

    async def release_idempotency(self, store_id: str, key: str, owner: str) -> None:
        def release(conn: sqlite3.Connection) -> None:
            conn.execute(
                "DELETE FROM idempotency WHERE store_id = ? AND key = ? AND owner = ?"
                " AND state = 'running'",
                (store_id, key, owner),
            )

        await self._write("release an idempotency key", release)

    async def reserve_accept(
        self,
        store_id: str,
        order_id: str,
        product_id: str,
        idempotency_key: str,
        *,
        cap: int,
        now_ms: int,
        lease_ms: int,
    ) -> Reservation:
        def reserve(conn: sqlite3.Connection) -> Reservation:
            row = conn.execute(
                "SELECT idempotency_key, state, updated_ms FROM accepts"
                " WHERE store_id = ? AND order_id = ? AND product_id = ?",
                (store_id, order_id, product_id),
            ).fetchone()
            if row is not None:
                held_by, state, updated_ms = row
                if held_by == idempotency_key:
                    # Our own reservation, left by a request that died: carry on. If it was
                    # even charged, the charge is repeated with the same processor key, which
                    # the processor answers without charging again.
                    return "reserved"
                if state == "charged":
                    return "already_accepted"
                if now_ms - updated_ms < lease_ms:
                    return "in_progress"
                conn.execute(
                    "UPDATE accepts SET idempotency_key = ?, updated_ms = ?"
                    " WHERE store_id = ? AND order_id = ? AND product_id = ?",
                    (idempotency_key, now_ms, store_id, order_id, product_id),
                )
                return "reserved"
            (taken,) = conn.execute(
                "SELECT COUNT(*) FROM accepts WHERE store_id = ? AND order_id = ?",
                (store_id, order_id),
            ).fetchone()
            if taken >= cap:
                return "cap_reached"
            conn.execute(
                "INSERT INTO accepts (store_id, order_id, product_id, idempotency_key, state,"
                " updated_ms) VALUES (?, ?, ?, ?, 'reserved', ?)",
                (store_id, order_id, product_id, idempotency_key, now_ms),
            )
            return "reserved"

        return await self._write("reserve an accept", reserve)

    async def cancel_accept(
        self, store_id: str, order_id: str, product_id: str, idempotency_key: str
    ) -> None:
        def cancel(conn: sqlite3.Connection) -> None:
            conn.execute(
                "DELETE FROM accepts WHERE store_id = ? AND order_id = ? AND product_id = ?"
                " AND idempotency_key = ? AND state = 'reserved'",
                (store_id, order_id, product_id, idempotency_key),
            )

        await self._write("cancel an accept", cancel)

    async def complete_accept(
        self, store_id: str, order_id: str, line: OrderLine, charge_id: str, now_ms: int
    ) -> None:
        from offer_service.storage.sqlite.store import add_bought_line

        def complete(conn: sqlite3.Connection) -> None:
            cursor = conn.execute(
                "UPDATE accepts SET state = 'charged', charge_id = ?, updated_ms = ?"
                " WHERE store_id = ? AND order_id = ? AND product_id = ? AND state = 'reserved'",
                (charge_id, now_ms, store_id, order_id, line.product_id),
            )
            if cursor.rowcount == 1:  # not when a retry completes an accept already charged
                add_bought_line(conn, store_id, order_id, line, now_ms)

        await self._write("complete an accept", complete)

    async def rotate_webhook_secret(self, store_id: str, new_secret: str) -> StoreRecord:
        def rotate(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                "SELECT webhook_secrets FROM stores WHERE id = ?", (store_id,)
            ).fetchone()
            if row is None:
                raise sqlite3.DatabaseError(f"unknown store {store_id!r}")
            current = orjson.loads(row[0])
            conn.execute(
                "UPDATE stores SET webhook_secrets = ?, version = version + 1 WHERE id = ?",
                (orjson.dumps([new_secret, *current[:1]]), store_id),
            )

        await self._write("rotate the webhook secret", rotate)
        record = await self.get_store(store_id)
        assert record is not None
        return record

    async def rotate_signing_key(self, store_id: str, new_key: SigningKey) -> StoreRecord:
        def rotate(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                "SELECT signing_keys FROM stores WHERE id = ?", (store_id,)
            ).fetchone()
            if row is None:
                raise sqlite3.DatabaseError(f"unknown store {store_id!r}")
            current = orjson.loads(row[0])
            keys = [{"kid": new_key.kid, "secret": new_key.secret.hex()}, *current[:1]]
            conn.execute(
                "UPDATE stores SET signing_keys = ?, version = version + 1 WHERE id = ?",
                (orjson.dumps(keys), store_id),
            )

        await self._write("rotate the signing key", rotate)
        record = await self.get_store(store_id)
        assert record is not None
        return record
