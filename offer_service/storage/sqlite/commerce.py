"""SQLite tables where money moves: idempotency claims and accept reservations."""

from __future__ import annotations

import sqlite3

from offer_service.domain.orders import OrderLine
from offer_service.domain.records import IdempotencyClaim, Reservation
from offer_service.storage.sqlite.connection import SQLiteConnection
from offer_service.storage.sqlite.orders import add_bought_line


class SQLiteCommerce(SQLiteConnection):
    """The CommerceStore part of the Store protocol: one-click accepts and their idempotency."""

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
        def complete(conn: sqlite3.Connection) -> None:
            cursor = conn.execute(
                "UPDATE accepts SET state = 'charged', charge_id = ?, updated_ms = ?"
                " WHERE store_id = ? AND order_id = ? AND product_id = ? AND state = 'reserved'",
                (charge_id, now_ms, store_id, order_id, line.product_id),
            )
            if cursor.rowcount == 1:  # not when a retry completes an accept already charged
                add_bought_line(conn, store_id, order_id, line, now_ms)

        await self._write("complete an accept", complete)
