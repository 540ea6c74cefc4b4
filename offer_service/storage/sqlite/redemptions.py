"""SQLite's RedemptionStore: the first answer of each (cart, offer token) pair redeemed."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from offer_service.storage.sqlite.connection import (
    IN_IDS,
    SQLiteConnection,
    ids_param,
    require_store,
)

# Expired answers dropped by each write, so the table stays as large as its live answers.
PRUNE_PER_WRITE = 100

_KEEP = """
INSERT INTO redemptions (store_id, key, answer, redeemed_ms, expires_ms) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (store_id, key) DO UPDATE SET
    answer = excluded.answer, redeemed_ms = excluded.redeemed_ms, expires_ms = excluded.expires_ms
    WHERE redemptions.expires_ms <= excluded.redeemed_ms
"""

_PRUNE = """
DELETE FROM redemptions WHERE (store_id, key) IN (
    SELECT store_id, key FROM redemptions WHERE expires_ms <= ? LIMIT ?
)
"""


class SQLiteRedemptions(SQLiteConnection):
    """The RedemptionStore part of the Store protocol."""

    async def remember_redemptions(
        self, store_id: str, answers: Mapping[str, tuple[bytes, int] | None], now_ms: int
    ) -> dict[str, tuple[bytes, bool]]:
        def keep(conn: sqlite3.Connection) -> dict[str, tuple[bytes, bool]]:
            require_store(conn, store_id)
            # The write holds the file's lock: nobody keeps an answer between this read and it.
            found = dict(read(conn))
            conn.executemany(
                _KEEP,
                [
                    (store_id, key, kept[0], now_ms, kept[1])
                    for key, kept in answers.items()
                    if kept is not None
                ],
            )
            kept = {key: (answer, key not in found) for key, answer in read(conn)}
            conn.execute(_PRUNE, (now_ms, PRUNE_PER_WRITE))
            return kept

        def read(conn: sqlite3.Connection) -> list[tuple[str, bytes]]:
            return [
                (key, bytes(answer))
                for key, answer in conn.execute(
                    f"SELECT key, answer FROM redemptions WHERE store_id = ? AND key {IN_IDS}"
                    " AND expires_ms > ?",
                    (store_id, ids_param(answers), now_ms),
                )
            ]

        return await self._write("remember redemptions", keep)
