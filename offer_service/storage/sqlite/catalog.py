"""SQLite's CatalogStore: a store's products, their families and the best sellers."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from typing import Any

from offer_service.domain.products import Product
from offer_service.storage.codec import dump_product, load_product
from offer_service.storage.sqlite.connection import (
    IN_IDS,
    SQLiteConnection,
    bump_version,
    ids_param,
    require_store,
)

_UPSERT_PRODUCT = """
INSERT INTO products (store_id, id, family, category, data) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (store_id, id) DO UPDATE
    SET family = excluded.family, category = excluded.category, data = excluded.data
"""


class SQLiteCatalog(SQLiteConnection):
    """The CatalogStore part of the Store protocol."""

    async def upsert_products(self, store_id: str, products: Sequence[Product]) -> int:
        """Insert or replace products by id (a later duplicate in `products` wins)."""
        rows = [(store_id, p.id, p.family, p.category, dump_product(p)) for p in products]

        def upsert(conn: sqlite3.Connection) -> None:
            require_store(conn, store_id)
            if not rows:
                return
            conn.executemany(_UPSERT_PRODUCT, rows)
            # Keep the best-seller index's copy of each category in step with the catalog.
            conn.executemany(
                "UPDATE product_stats SET category = ?3"
                " WHERE store_id = ?1 AND product_id = ?2 AND category IS NOT ?3",
                [(store_id, p.id, p.category) for p in products],
            )
            bump_version(conn, store_id)

        await self._write("upsert products", upsert)
        return len(rows)

    async def get_products(self, store_id: str, ids: Collection[str]) -> dict[str, Product]:
        if not ids:
            return {}
        rows = self._query(
            "read products",
            f"SELECT id, data FROM products WHERE store_id = ? AND id {IN_IDS}",
            (store_id, ids_param(ids)),
        )
        return {product_id: load_product(data) for product_id, data in rows}

    async def list_products(
        self, store_id: str, limit: int, after: str | None = None
    ) -> list[Product]:
        op, low = (">=", "") if after is None else (">", after)
        rows = self._query(
            "list products",
            f"SELECT data FROM products WHERE store_id = ? AND id {op} ? ORDER BY id LIMIT ?",
            (store_id, low, limit),
        )
        return [load_product(data) for (data,) in rows]

    async def family_products(self, store_id: str, family: str) -> list[Product]:
        rows = self._query(
            "read a family",
            "SELECT data FROM products WHERE store_id = ? AND family = ? ORDER BY id",
            (store_id, family),
        )
        return [load_product(data) for (data,) in rows]

    async def best_sellers(
        self, store_id: str, category: str | None, limit: int
    ) -> list[tuple[str, int]]:
        # Two statements so each is one scan of its own index, already in order.
        if category is None:
            sql = (
                "SELECT product_id, baskets FROM product_stats WHERE store_id = ?"
                " ORDER BY baskets DESC, product_id LIMIT ?"
            )
            params: tuple[Any, ...] = (store_id, limit)
        else:
            sql = (
                "SELECT product_id, baskets FROM product_stats WHERE store_id = ? AND category = ?"
                " ORDER BY baskets DESC, product_id LIMIT ?"
            )
            params = (store_id, category, limit)
        return [(product_id, n) for product_id, n in self._query("read best sellers", sql, params)]
