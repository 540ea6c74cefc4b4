"""Redis: basket counts, co-purchase pair counts and neighbour lists.

Pair counts are one JSON value per product, written whole under a new generation by a bulk
recount and switched to in one step; incremental counts are merged and written back with a
compare-and-set script.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from offer_service.domain.records import PairCount
from offer_service.exceptions import StoreError
from offer_service.storage.codec import (
    add_partners,
    adjacency,
    both_ways,
    dump_neighbors,
    dump_partners,
    load_neighbors,
    load_partners,
)
from offer_service.storage.redis.client import CAS_ATTEMPTS, RedisBase, chunks, flat, sha1
from offer_service.storage.redis.keys import StoreKeys
from offer_service.storage.redis.scripts.affinity import (
    READ_PAIRS,
    SET_NEIGHBORS,
    SWAP_PAIRS,
    UPDATE_PAIRS,
)

# Sizes of one script call or one command, as in orders.py.
NEIGHBORS_PER_SCRIPT = 500
PAIR_BYTES_PER_COMMAND = 4 * 1024 * 1024


class RedisAffinity(RedisBase):
    """The AffinityStore part of the Store protocol."""

    async def basket_count(self, store_id: str) -> int:
        k = StoreKeys(store_id)
        value = await self._read("read the basket count", lambda c: c.hget(k.record, "baskets"))
        return int(value) if value is not None else 0

    async def product_basket_counts(self, store_id: str, ids: Collection[str]) -> dict[str, int]:
        """Baskets per product; products in no basket are left out."""
        if not ids:
            return {}
        wanted = list(ids)
        k = StoreKeys(store_id)
        scores = await self._read("read basket counts", lambda c: c.zmscore(k.best, wanted))
        return {
            pid: -int(score) for pid, score in zip(wanted, scores, strict=True) if score is not None
        }

    async def _read_pairs(
        self, k: StoreKeys, product_ids: Sequence[str]
    ) -> tuple[str | None, list[bytes | None]]:
        reply = await self._script(
            "read pair counts", READ_PAIRS, [k.record], [k.prefix, *product_ids]
        )
        generation = reply[0].decode() if reply[0] is not None else None
        values = list(reply[1:]) + [None] * (len(product_ids) - len(reply) + 1)
        return generation, values

    async def add_pair_counts(
        self, store_id: str, increments: Mapping[tuple[str, str], int]
    ) -> None:
        k = StoreKeys(store_id)
        added = both_ways(increments)
        product_ids = sorted(added)
        for _ in range(CAS_ATTEMPTS):
            generation, values = await self._read_pairs(k, product_ids)
            if generation is None:
                raise StoreError(f"unknown store {store_id!r}")
            if not product_ids:
                return
            args: list[Any] = [k.prefix, generation]
            for product_id, current in zip(product_ids, values, strict=True):
                blob = add_partners(current, added[product_id])
                args += [product_id, sha1(current) if current else "", blob]
            if await self._script("add pair counts", UPDATE_PAIRS, [k.record], args):
                return
        raise StoreError("pair counts kept changing while they were added to")

    async def replace_pair_counts(
        self, store_id: str, pairs: Iterable[tuple[str, str, int]]
    ) -> None:
        """Write every count under a new generation, then switch to it in one step (readers
        never see half of a replacement) and drop the old generation in the background."""
        k = StoreKeys(store_id)
        await self._require_store(k, store_id)
        partners = await asyncio.to_thread(adjacency, pairs)
        generation = str(
            await self._write("start a generation", lambda c: c.hincrby(k.record, "pairs_next", 1))
        )
        target = k.pairs(generation)
        await self._write("clear a generation", lambda c: c.delete(target))
        batch: dict[str, bytes] = {}
        size = 0
        for product_id, counts in partners.items():
            blob = dump_partners(counts)
            batch[product_id] = blob
            size += len(blob) + len(product_id)
            if size >= PAIR_BYTES_PER_COMMAND:
                await self._do("write pair counts", "hset", target, mapping=batch)
                batch, size = {}, 0
        if batch:
            await self._write("write pair counts", lambda c: c.hset(target, mapping=batch))
        del partners
        old = await self._script("switch pair counts", SWAP_PAIRS, [k.record], [generation])
        old_generation = old.decode() if isinstance(old, bytes) else str(old)
        if old_generation and old_generation != generation:
            await self._write("drop old pair counts", lambda c: c.unlink(k.pairs(old_generation)))

    async def pair_counts(self, store_id: str, product_id: str) -> list[PairCount]:
        """Every partner of `product_id`, most shared baskets first, ties by id."""
        _, (value,) = await self._read_pairs(StoreKeys(store_id), [product_id])
        if not value:
            return []
        return load_partners(value)

    async def set_neighbors(self, store_id: str, lists: Mapping[str, Sequence[PairCount]]) -> None:
        k = StoreKeys(store_id)
        rows = [(product_id, dump_neighbors(ranked)) for product_id, ranked in lists.items()]
        if not rows:
            await self._require_store(k, store_id)
            return
        for batch in chunks(rows, NEIGHBORS_PER_SCRIPT):
            await self._script(
                "set neighbours", SET_NEIGHBORS, [k.record], [k.prefix, *flat(batch)]
            )

    async def neighbors(self, store_id: str, product_id: str, limit: int) -> list[PairCount]:
        k = StoreKeys(store_id)
        data = await self._read("read neighbours", lambda c: c.hget(k.neighbors, product_id))
        if data is None or limit < 1:
            return []
        return load_neighbors(data, limit)
