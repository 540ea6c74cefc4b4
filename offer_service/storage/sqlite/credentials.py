"""SQLite: a store's credentials rotated: API keys (with a grace period), secrets, signing keys."""

from __future__ import annotations

import sqlite3

import orjson

from offer_service.domain.records import KeyKind, SigningKey, StoreRecord
from offer_service.storage.codec import signing_key_json
from offer_service.storage.sqlite.tenants import SQLiteTenants


class SQLiteCredentials(SQLiteTenants):
    """The rotations of the TenantStore part of the Store protocol."""

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

    async def rotate_webhook_secret(
        self, store_id: str, new_secret: str, *, keep_previous: bool = True
    ) -> StoreRecord:
        def rotate(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                "SELECT webhook_secrets FROM stores WHERE id = ?", (store_id,)
            ).fetchone()
            if row is None:
                raise sqlite3.DatabaseError(f"unknown store {store_id!r}")
            previous = orjson.loads(row[0])[:1] if keep_previous else []
            conn.execute(
                "UPDATE stores SET webhook_secrets = ?, version = version + 1 WHERE id = ?",
                (orjson.dumps([new_secret, *previous]), store_id),
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
            keys = [signing_key_json(new_key), *current[:1]]
            conn.execute(
                "UPDATE stores SET signing_keys = ?, version = version + 1 WHERE id = ?",
                (orjson.dumps(keys), store_id),
            )

        await self._write("rotate the signing key", rotate)
        record = await self.get_store(store_id)
        assert record is not None
        return record
