"""SQLite's AffinityStore: basket counts, co-purchase pair counts and neighbour lists."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterable, Mapping, Sequence

from offer_service.domain.records import PairCount
from offer_service.storage.codec import (
    add_partners,
    adjacency,
    both_ways,
    dump_neighbors,
    dump_partners,
    load_neighbors,
    load_partners,
)
from offer_service.storage.sqlite.connection import (
    IN_IDS,
    SQLiteConnection,
    bump_version,
    ids_param,
    require_store,
)


class SQLiteAffinity(SQLiteConnection):
    """The AffinityStore part of the Store protocol."""

    async def basket_count(self, store_id: str) -> int:
        rows = self._query(
            "read the basket count", "SELECT baskets FROM stores WHERE id = ?", (store_id,)
        )
        return int(rows[0][0]) if rows else 0

    async def product_basket_counts(self, store_id: str, ids: Collection[str]) -> dict[str, int]:
        """Baskets per product; products in no basket are left out."""
        if not ids:
            return {}
        rows = self._query(
            "read basket counts",
            f"SELECT product_id, baskets FROM product_stats WHERE store_id = ? AND product_id"
            f" {IN_IDS}",
            (store_id, ids_param(ids)),
        )
        return {product_id: n for product_id, n in rows}

    async def add_pair_counts(
        self, store_id: str, increments: Mapping[tuple[str, str], int]
    ) -> None:
        added = both_ways(increments)

        def add(conn: sqlite3.Connection) -> None:
            require_store(conn, store_id)
            if not added:
                return
            stored = dict(
                conn.execute(
                    f"SELECT product_id, partners FROM pair_counts WHERE store_id = ?"
                    f" AND product_id {IN_IDS}",
                    (store_id, ids_param(added)),
                ).fetchall()
            )
            conn.executemany(
                "INSERT OR REPLACE INTO pair_counts (store_id, product_id, partners)"
                " VALUES (?, ?, ?)",
                [
                    (store_id, product_id, add_partners(stored.get(product_id), partners))
                    for product_id, partners in added.items()
                ],
            )
            bump_version(conn, store_id)

        await self._write("add pair counts", add)

    async def replace_pair_counts(
        self, store_id: str, pairs: Iterable[tuple[str, str, int]]
    ) -> None:
        partners = await self._off_loop(lambda: adjacency(pairs))
        rows = ((store_id, product_id, dump_partners(p)) for product_id, p in partners.items())

        def replace(conn: sqlite3.Connection) -> None:
            require_store(conn, store_id)
            conn.execute("DELETE FROM pair_counts WHERE store_id = ?", (store_id,))
            conn.executemany(
                "INSERT INTO pair_counts (store_id, product_id, partners) VALUES (?, ?, ?)", rows
            )
            bump_version(conn, store_id)

        await self._write("replace pair counts", replace)

    async def pair_counts(self, store_id: str, product_id: str) -> list[PairCount]:
        """Every partner of `product_id`, most shared baskets first, ties by id."""
        rows = self._query(
            "read pair counts",
            "SELECT partners FROM pair_counts WHERE store_id = ? AND product_id = ?",
            (store_id, product_id),
        )
        if not rows:
            return []
        return load_partners(rows[0][0])

    async def set_neighbors(self, store_id: str, lists: Mapping[str, Sequence[PairCount]]) -> None:
        rows = [
            (store_id, product_id, dump_neighbors(ranked)) for product_id, ranked in lists.items()
        ]

        def replace(conn: sqlite3.Connection) -> None:
            require_store(conn, store_id)
            if rows:
                conn.executemany(
                    "INSERT OR REPLACE INTO neighbors (store_id, product_id, ranked)"
                    " VALUES (?, ?, ?)",
                    rows,
                )
                bump_version(conn, store_id)

        await self._write("set neighbours", replace)

    async def neighbors(self, store_id: str, product_id: str, limit: int) -> list[PairCount]:
        rows = self._query(
            "read neighbours",
            "SELECT ranked FROM neighbors WHERE store_id = ? AND product_id = ?",
            (store_id, product_id),
        )
        if not rows or limit < 1:
            return []
        return load_neighbors(rows[0][0], limit)
