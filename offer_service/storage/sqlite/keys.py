"""SQLite: publishable and secret keys replaced by a rotation, until their grace period ends."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from offer_service.domain.records import KeyKind, RetiredKey, StoreRecord

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS retired_keys (
    key TEXT PRIMARY KEY,
    store_id TEXT NOT NULL REFERENCES stores (id),
    kind TEXT NOT NULL,
    expires_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS retired_keys_by_store ON retired_keys (store_id)
"""


class SQLiteKeys:
    """Mixed into SQLiteStore: key rotation with a grace period."""

    if TYPE_CHECKING:

        def _query(self, action: str, sql: str, params: Any = ()) -> list[Any]: ...
        async def _write(self, action: str, fn: Callable[[sqlite3.Connection], T]) -> T: ...
        async def get_store(self, store_id: str) -> StoreRecord | None: ...

    def with_retired_keys(self, record: StoreRecord | None, now_ms: int) -> StoreRecord | None:
        """The record with its retired keys still in their grace period."""
        if record is None:
            return None
        rows = self._query(
            "read retired keys",
            "SELECT key, kind, expires_ms FROM retired_keys WHERE store_id = ? AND expires_ms > ?"
            " ORDER BY expires_ms DESC, key",
            (record.id, now_ms),
        )
        if not rows:
            return record
        return dataclasses.replace(record, retired_keys=tuple(RetiredKey(*row) for row in rows))

    async def rotate_api_key(
        self, store_id: str, kind: KeyKind, new_key: str, *, grace_ms: int, now_ms: int
    ) -> StoreRecord:
        column = "publishable_key" if kind == "publishable" else "secret_key"
        expires = now_ms + max(grace_ms, 0)

        def rotate(conn: sqlite3.Connection) -> None:
            row = conn.execute(f"SELECT {column} FROM stores WHERE id = ?", (store_id,)).fetchone()
            if row is None:
                raise sqlite3.DatabaseError(f"unknown store {store_id!r}")
            taken = conn.execute(
                "SELECT 1 FROM stores WHERE publishable_key = ?1 OR secret_key = ?1"
                " UNION ALL SELECT 1 FROM retired_keys WHERE key = ?1",
                (new_key,),
            ).fetchone()
            if taken is not None:
                raise sqlite3.IntegrityError("the new key is already a key of a store")
            conn.execute(
                "DELETE FROM retired_keys WHERE store_id = ? AND expires_ms <= ?",
                (store_id, now_ms),
            )
            conn.execute(
                "UPDATE retired_keys SET expires_ms = MIN(expires_ms, ?)"
                " WHERE store_id = ? AND kind = ?",
                (expires, store_id, kind),
            )
            if expires > now_ms:
                conn.execute(
                    "INSERT INTO retired_keys (key, store_id, kind, expires_ms)"
                    " VALUES (?, ?, ?, ?)",
                    (row[0], store_id, kind, expires),
                )
            conn.execute(
                f"UPDATE stores SET {column} = ?, version = version + 1 WHERE id = ?",
                (new_key, store_id),
            )

        await self._write(f"rotate the {kind} key", rotate)
        record = self.with_retired_keys(await self.get_store(store_id), now_ms)
        assert record is not None
        return record
