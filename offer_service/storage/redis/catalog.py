"""Redis: a store's products, their family sets and the best-seller indexes."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from offer_service.domain.products import Product
from offer_service.storage.codec import dump_product, load_product
from offer_service.storage.redis.client import RedisBase, chunks, flat
from offer_service.storage.redis.keys import StoreKeys
from offer_service.storage.redis.scripts.catalog import UPSERT_PRODUCTS

# Products per script call: big enough to amortise the round trip, small enough that Redis
# (single-threaded) never stalls other clients for long.
PRODUCTS_PER_SCRIPT = 500


class RedisCatalog(RedisBase):
    """The CatalogStore part of the Store protocol."""

    async def upsert_products(self, store_id: str, products: Sequence[Product]) -> int:
        """Insert or replace products by id (a later duplicate in `products` wins)."""
        k = StoreKeys(store_id)
        if not products:
            await self._require_store(k, store_id)
            return 0
        rows = [
            (
                p.id,
                "0" if p.family is None else "1",
                p.family or "",
                p.category,
                dump_product(p),
            )
            for p in products
        ]
        for batch in chunks(rows, PRODUCTS_PER_SCRIPT):
            await self._script(
                "upsert products", UPSERT_PRODUCTS, [k.record], [k.prefix, *flat(batch)]
            )
        return len(rows)

    async def get_products(self, store_id: str, ids: Collection[str]) -> dict[str, Product]:
        if not ids:
            return {}
        wanted = list(ids)
        k = StoreKeys(store_id)
        values = await self._read("read products", lambda c: c.hmget(k.products, wanted))
        return {
            pid: load_product(v) for pid, v in zip(wanted, values, strict=True) if v is not None
        }

    async def list_products(
        self, store_id: str, limit: int, after: str | None = None
    ) -> list[Product]:
        if limit < 1:
            return []
        k = StoreKeys(store_id)
        low = "-" if after is None else "(" + after
        ids = await self._write(
            "list products",
            lambda c: c.zrangebylex(k.product_ids, low, "+", start=0, num=limit),
        )
        if not ids:
            return []
        values = await self._write("read products", lambda c: c.hmget(k.products, ids))
        return [load_product(v) for v in values if v is not None]

    async def family_products(self, store_id: str, family: str) -> list[Product]:
        k = StoreKeys(store_id)
        ids = await self._read("read a family", lambda c: c.smembers(k.family(family)))
        found = await self.get_products(store_id, sorted(i.decode() for i in ids))
        return [found[pid] for pid in sorted(found)]

    async def best_sellers(
        self, store_id: str, category: str | None, limit: int
    ) -> list[tuple[str, int]]:
        if limit < 1:
            return []
        k = StoreKeys(store_id)
        key = k.best if category is None else k.best_in(category)
        rows = await self._read(
            "read best sellers", lambda c: c.zrange(key, 0, limit - 1, withscores=True)
        )
        return [(pid.decode(), -int(score)) for pid, score in rows]
