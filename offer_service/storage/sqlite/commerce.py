"""SQLite tables where money moves: idempotency claims, accept reservations, recorded charges."""

from __future__ import annotations

import sqlite3

from offer_service.domain.orders import OrderLine
from offer_service.domain.records import ChargeAttempt, ChargeClaim, IdempotencyClaim, Reservation
from offer_service.storage.codec import dump_charge_attempt, load_charge_attempt
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
            if state == "running" and now_ms - started_ms < lease_ms:
                return IdempotencyClaim("in_progress")
            # Released, or the owner died mid-request: take the claim over.
            conn.execute(
                "UPDATE idempotency SET owner = ?, state = 'running', started_ms = ?"
                " WHERE store_id = ? AND key = ?",
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
            # Kept with its fingerprint: the same key with another body stays refused.
            conn.execute(
                "UPDATE idempotency SET state = 'open' WHERE store_id = ? AND key = ?"
                " AND owner = ? AND state = 'running'",
                (store_id, key, owner),
            )

        await self._write("release an idempotency key", release)

    async def settle_idempotency(
        self, store_id: str, key: str, answer: tuple[int, bytes] | None
    ) -> None:
        def settle(conn: sqlite3.Connection) -> None:
            if answer is None:
                conn.execute(
                    "UPDATE idempotency SET state = 'open' WHERE store_id = ? AND key = ?"
                    " AND state != 'done'",
                    (store_id, key),
                )
            else:
                conn.execute(
                    "UPDATE idempotency SET state = 'done', status = ?, body = ?"
                    " WHERE store_id = ? AND key = ?",
                    (answer[0], answer[1], store_id, key),
                )

        await self._write("settle an idempotency key", settle)

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
                # A recorded charge is never taken over: only settling it ends it.
                if state == "charging" or now_ms - updated_ms < lease_ms:
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

    async def record_charge(
        self, attempt: ChargeAttempt, *, now_ms: int, lease_ms: int
    ) -> ChargeClaim:
        where = (attempt.store_id, attempt.order_id, attempt.product_id)

        def record(conn: sqlite3.Connection) -> ChargeClaim:
            row = conn.execute(
                "SELECT idempotency_key, state FROM accepts"
                " WHERE store_id = ? AND order_id = ? AND product_id = ?",
                where,
            ).fetchone()
            if row is None or row[0] != attempt.idempotency_key:
                return ChargeClaim("lost")
            found = conn.execute(
                "SELECT attempt, calls, due_ms FROM charge_attempts"
                " WHERE store_id = ? AND order_id = ? AND product_id = ?",
                where,
            ).fetchone()
            if row[1] == "charged":
                recorded = attempt if found is None else load_charge_attempt(where[0], found[0])
                return ChargeClaim("call", recorded, found[1] if found else 1, charged=True)
            if found is not None and row[1] == "charging":
                recorded = load_charge_attempt(where[0], found[0])
                if found[2] is not None and found[2] > now_ms:
                    return ChargeClaim("busy", recorded, found[1])
                conn.execute(
                    "UPDATE charge_attempts SET calls = calls + 1, due_ms = ?"
                    " WHERE store_id = ? AND order_id = ? AND product_id = ?",
                    (now_ms + lease_ms, *where),
                )
                return ChargeClaim("call", recorded, found[1] + 1)
            conn.execute(
                "INSERT OR REPLACE INTO charge_attempts"
                " (store_id, order_id, product_id, attempt, calls, due_ms)"
                " VALUES (?, ?, ?, ?, 1, ?)",
                (*where, dump_charge_attempt(attempt), now_ms + lease_ms),
            )
            conn.execute(
                "UPDATE accepts SET state = 'charging', updated_ms = ?"
                " WHERE store_id = ? AND order_id = ? AND product_id = ?",
                (now_ms, *where),
            )
            return ChargeClaim("call", attempt, 1)

        return await self._write("record a charge", record)

    async def pending_charges(self, now_ms: int, limit: int) -> list[tuple[ChargeAttempt, int]]:
        rows = self._query(
            "list unsettled charges",
            "SELECT store_id, attempt, calls FROM charge_attempts"
            " WHERE due_ms IS NOT NULL AND due_ms <= ? ORDER BY due_ms LIMIT ?",
            (now_ms, limit),
        )
        return [
            (load_charge_attempt(store_id, attempt), calls) for store_id, attempt, calls in rows
        ]

    async def cancel_accept(
        self, store_id: str, order_id: str, product_id: str, idempotency_key: str
    ) -> None:
        def cancel(conn: sqlite3.Connection) -> None:
            cursor = conn.execute(
                "DELETE FROM accepts WHERE store_id = ? AND order_id = ? AND product_id = ?"
                " AND idempotency_key = ? AND state IN ('reserved', 'charging')",
                (store_id, order_id, product_id, idempotency_key),
            )
            if cursor.rowcount == 1:
                conn.execute(
                    "DELETE FROM charge_attempts"
                    " WHERE store_id = ? AND order_id = ? AND product_id = ?",
                    (store_id, order_id, product_id),
                )

        await self._write("cancel an accept", cancel)

    async def complete_accept(
        self, store_id: str, order_id: str, line: OrderLine, charge_id: str, now_ms: int
    ) -> None:
        def complete(conn: sqlite3.Connection) -> None:
            cursor = conn.execute(
                "UPDATE accepts SET state = 'charged', charge_id = ?, updated_ms = ?"
                " WHERE store_id = ? AND order_id = ? AND product_id = ?"
                " AND state IN ('reserved', 'charging')",
                (charge_id, now_ms, store_id, order_id, line.product_id),
            )
            if cursor.rowcount == 1:  # not when a retry completes an accept already charged
                conn.execute(
                    "UPDATE charge_attempts SET due_ms = NULL"
                    " WHERE store_id = ? AND order_id = ? AND product_id = ?",
                    (store_id, order_id, line.product_id),
                )
                add_bought_line(conn, store_id, order_id, line, now_ms)

        await self._write("complete an accept", complete)
