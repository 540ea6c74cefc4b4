"""SQLite's TenantStore reads and writes: stores, their rules and version, keys resolved."""

from __future__ import annotations

import dataclasses
import sqlite3
from typing import Any

import orjson

from offer_service.domain.policy import StoreRules
from offer_service.domain.records import RetiredKey, StoreRecord
from offer_service.exceptions import StoreError
from offer_service.storage.codec import dump_rules, dump_signing_keys, load_rules, load_signing_keys
from offer_service.storage.sqlite.connection import SQLiteConnection
from offer_service.storage.tenants import new_store_record
from offer_service.types import now_ms

_STORE_COLUMNS = (
    "id, name, publishable_key, secret_key, webhook_secrets, signing_keys, rules, created_at_ms"
)


def _store_record(row: tuple[Any, ...]) -> StoreRecord:
    store_id, name, pk, sk, webhook_secrets, signing_keys, rules, created_at_ms = row
    return StoreRecord(
        id=store_id,
        name=name,
        publishable_key=pk,
        secret_key=sk,
        webhook_secrets=tuple(orjson.loads(webhook_secrets)),
        signing_keys=load_signing_keys(signing_keys),
        rules=load_rules(rules),
        created_at_ms=created_at_ms,
    )


class SQLiteTenants(SQLiteConnection):
    """Stores (tenants): created, read, resolved by key, their rules and version."""

    async def create_store(
        self,
        name: str,
        *,
        store_id: str | None = None,
        publishable_key: str | None = None,
        secret_key: str | None = None,
        webhook_secret: str | None = None,
        rules: StoreRules | None = None,
    ) -> StoreRecord:
        record = new_store_record(
            name,
            store_id=store_id,
            publishable_key=publishable_key,
            secret_key=secret_key,
            webhook_secret=webhook_secret,
            rules=rules,
        )
        row = (
            record.id,
            record.name,
            record.publishable_key,
            record.secret_key,
            orjson.dumps(record.webhook_secrets).decode(),
            dump_signing_keys(record.signing_keys).decode(),
            dump_rules(record.rules),
            record.created_at_ms,
        )

        def insert(conn: sqlite3.Connection) -> None:
            # A key must not be either key of another store: a lookup would be ambiguous.
            taken = conn.execute(
                "SELECT 1 FROM stores WHERE id = ?1"
                " OR publishable_key IN (?2, ?3) OR secret_key IN (?2, ?3)"
                " UNION ALL SELECT 1 FROM retired_keys WHERE key IN (?2, ?3)",
                (record.id, record.publishable_key, record.secret_key),
            ).fetchone()
            if taken is not None or record.publishable_key == record.secret_key:
                raise StoreError(f"the id or a key of store {record.id!r} is already taken")
            conn.execute(f"INSERT INTO stores ({_STORE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)", row)

        await self._write("create a store", insert)
        return record

    async def get_store(self, store_id: str) -> StoreRecord | None:
        rows = self._query(
            "read a store", f"SELECT {_STORE_COLUMNS} FROM stores WHERE id = ?", (store_id,)
        )
        return self.with_retired_keys(_store_record(rows[0]) if rows else None, now_ms())

    async def store_by_key(self, key: str) -> StoreRecord | None:
        now = now_ms()
        rows = self._query(
            "resolve a key",
            f"SELECT {_STORE_COLUMNS} FROM stores WHERE publishable_key = ?1"
            f" UNION ALL SELECT {_STORE_COLUMNS} FROM stores WHERE secret_key = ?1"
            f" UNION ALL SELECT {_STORE_COLUMNS} FROM stores WHERE id = (SELECT store_id"
            " FROM retired_keys WHERE key = ?1 AND expires_ms > ?2)",
            (key, now),
        )
        return self.with_retired_keys(_store_record(rows[0]) if rows else None, now)

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

    async def set_rules(self, store_id: str, rules: StoreRules) -> StoreRecord:
        def update(conn: sqlite3.Connection) -> StoreRecord:
            row = conn.execute(
                "UPDATE stores SET rules = ?, version = version + 1 WHERE id = ?"
                f" RETURNING {_STORE_COLUMNS}",
                (dump_rules(rules), store_id),
            ).fetchone()
            if row is None:
                raise StoreError(f"unknown store {store_id!r}")
            return _store_record(row)

        return await self._write("set rules", update)

    async def version(self, store_id: str) -> int:
        rows = self._query("read a version", "SELECT version FROM stores WHERE id = ?", (store_id,))
        return int(rows[0][0]) if rows else 0
