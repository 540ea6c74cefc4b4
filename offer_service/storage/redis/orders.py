"""Orders, returns and co-purchase affinity on Redis (mixed into RedisStore).

An order is one hash field (its JSON, in the SQLite backend's column order); returns and a
completed accept rewrite it with a compare-and-set script, so two writers never lose each
other's change. Pair counts are one JSON value per product, written whole under a new
generation by a bulk recount and switched to in one step; incremental counts are merged and
written back with a compare-and-set script.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from typing import Any

import orjson

from offer_service.domain.orders import Order, OrderLine, ProductReturn
from offer_service.domain.records import ImportCounts, PairCount
from offer_service.exceptions import StoreError
from offer_service.storage.redis.client import chunks, flat, sha1, subjects
from offer_service.storage.redis.commerce import CAS_ATTEMPTS, RedisCommerce
from offer_service.storage.redis.keys import StoreKeys
from offer_service.storage.redis.scripts import (
    ADD_ORDERS,
    ADD_RETURNS,
    READ_PAIRS,
    SET_NEIGHBORS,
    SWAP_PAIRS,
    UPDATE_PAIRS,
)

# Sizes of one script call or one command, as in redis.py.
ORDER_LINES_PER_SCRIPT = 5000
RETURNS_PER_SCRIPT = 500
NEIGHBORS_PER_SCRIPT = 500
PAIR_BYTES_PER_COMMAND = 4 * 1024 * 1024
SCAN_COUNT = 1000


def _order_json(o: Order) -> bytes:
    """[placed_ms, currency, customer, visitor, status, lines, returned]."""
    return orjson.dumps(
        [
            o.placed_at_ms,
            o.currency,
            o.customer_id,
            o.visitor_id,
            o.status,
            [(line.product_id, line.quantity, line.price) for line in o.lines],
            list(o.returned),
        ]
    )


def _order(order_id: str, data: bytes) -> Order:
    placed, currency, customer, visitor, status, lines, returned = orjson.loads(data)
    return Order(
        id=order_id,
        placed_at_ms=placed,
        currency=currency,
        lines=tuple(OrderLine(*line) for line in lines),
        customer_id=customer,
        visitor_id=visitor,
        status=status,
        returned=tuple(returned),
    )


def _adjacency(pairs: Iterable[tuple[str, str, int]]) -> dict[str, dict[str, int]]:
    """Undirected pair counts grouped under both products (a later repeat of a pair wins)."""
    partners: defaultdict[str, dict[str, int]] = defaultdict(dict)
    for a, b, n in pairs:
        if a != b:
            partners[a][b] = n
            partners[b][a] = n
    return partners


class RedisOrders(RedisCommerce):
    """Mixed into RedisStore: the order, return and affinity parts of the Store protocol."""

    # orders and returns

    async def add_orders(self, store_id: str, orders: Sequence[Order]) -> ImportCounts:
        k = StoreKeys(store_id)
        if not orders:
            await self._require_store(k, store_id)
            return ImportCounts(imported=0, duplicates=0)
        new_orders: list[Order] = []
        batch: list[Order] = []
        lines = 0
        for order in [*orders, None]:
            if order is not None:
                batch.append(order)
                lines += len(order.lines) + 1
                if lines < ORDER_LINES_PER_SCRIPT:
                    continue
            if not batch:
                break
            payload = orjson.dumps(
                [
                    [
                        o.id,
                        _order_json(o).decode(),
                        str(o.placed_at_ms),
                        subjects(o.customer_id, o.visitor_id),
                        sorted(o.product_ids),
                    ]
                    for o in batch
                ]
            )
            flags = await self._script("add orders", ADD_ORDERS, [k.record], [k.prefix, payload])
            new_orders.extend(o for o, flag in zip(batch, flags, strict=True) if flag)
            batch, lines = [], 0
        return ImportCounts(
            imported=len(new_orders),
            duplicates=len(orders) - len(new_orders),
            new_orders=tuple(new_orders),
        )

    async def get_order(self, store_id: str, order_id: str) -> Order | None:
        k = StoreKeys(store_id)
        data = await self._read("read an order", lambda c: c.hget(k.orders, order_id))
        return _order(order_id, data) if data is not None else None

    async def iter_orders(
        self, store_id: str, since_ms: int, until_ms: int
    ) -> AsyncIterator[Order]:
        k = StoreKeys(store_id)
        page: list[str] = []
        async for member, _ in self._score_range(k.order_times, since_ms, until_ms):
            page.append(member.decode())
            if len(page) >= SCAN_COUNT:
                for order in await self._orders(k, page):
                    yield order
                page = []
        for order in await self._orders(k, page):
            yield order

    async def _orders(self, k: StoreKeys, ids: list[str]) -> list[Order]:
        if not ids:
            return []
        values = await self._write("read orders", lambda c: c.hmget(k.orders, ids))
        return [_order(i, v) for i, v in zip(ids, values, strict=True) if v is not None]

    async def add_returns(self, store_id: str, returns: Sequence[ProductReturn]) -> int:
        """Record returns against the customer named and the order's buyer; the count of
        returns that named a known order or a customer (others have nobody to attach to)."""
        k = StoreKeys(store_id)
        if not returns:
            await self._require_store(k, store_id)
            return 0
        recorded = 0
        for batch in chunks(returns, RETURNS_PER_SCRIPT):
            recorded += await self._add_returns(k, batch)
        return recorded

    async def _add_returns(self, k: StoreKeys, returns: Sequence[ProductReturn]) -> int:
        order_ids = sorted({r.order_id for r in returns if r.order_id is not None})
        for _ in range(CAS_ATTEMPTS):
            read: dict[str, bytes] = {}
            if order_ids:
                values = await self._write("read orders", lambda c: c.hmget(k.orders, order_ids))
                read = {i: v for i, v in zip(order_ids, values, strict=True) if v is not None}
            changed = {i: orjson.loads(v) for i, v in read.items()}
            recorded = 0
            rows: list[tuple[str, str, str]] = []
            for ret in returns:
                names = subjects(ret.customer_id, None)
                buyers: list[str] | None = None
                order = changed.get(ret.order_id) if ret.order_id is not None else None
                if order is not None:
                    returned = set(order[6]) | set(ret.product_ids)
                    basket = {line[0] for line in order[5]}
                    order[6] = sorted(returned)
                    if basket and basket <= returned:
                        order[4] = "returned"
                    buyers = subjects(order[2], order[3])
                if buyers is None and not names:
                    continue
                recorded += 1
                names.extend(buyers or ())
                rows.extend(
                    (name, pid, str(ret.at_ms))
                    for name in dict.fromkeys(names)
                    for pid in ret.product_ids
                )
            args: list[Any] = [k.prefix, str(len(changed)), "1" if recorded else "0"]
            for order_id, order in changed.items():
                args += [order_id, sha1(read[order_id]), orjson.dumps(order)]
            args += flat(rows)
            if await self._script("add returns", ADD_RETURNS, [k.record], args):
                return recorded
        raise StoreError("orders kept changing while returns were recorded")

    async def iter_baskets(self, store_id: str) -> AsyncIterator[frozenset[str]]:
        # HSCAN may repeat a field while the hash grows: each order is yielded once.
        k = StoreKeys(store_id)
        seen: set[bytes] = set()
        cursor = 0
        while True:
            cursor, page = await self._do(
                "read baskets", "hscan", k.orders, cursor, count=SCAN_COUNT
            )
            for order_id, data in page.items():
                if order_id in seen:
                    continue
                seen.add(order_id)
                basket = frozenset(line[0] for line in orjson.loads(data)[5])
                if basket:
                    yield basket
            if cursor == 0:
                return

    # affinity

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
        added: defaultdict[str, Counter[str]] = defaultdict(Counter)
        for (a, b), n in increments.items():
            if a != b:
                added[a][b] += n
                added[b][a] += n
        product_ids = sorted(added)
        for _ in range(CAS_ATTEMPTS):
            generation, values = await self._read_pairs(k, product_ids)
            if generation is None:
                raise StoreError(f"unknown store {store_id!r}")
            if not product_ids:
                return
            args: list[Any] = [k.prefix, generation]
            for product_id, current in zip(product_ids, values, strict=True):
                merged: Counter[str] = Counter(orjson.loads(current) if current else {})
                merged.update(added[product_id])
                blob = orjson.dumps({q: n for q, n in merged.items() if n > 0})
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
        partners = await asyncio.to_thread(_adjacency, pairs)
        generation = str(
            await self._write("start a generation", lambda c: c.hincrby(k.record, "pairs_next", 1))
        )
        target = k.pairs(generation)
        await self._write("clear a generation", lambda c: c.delete(target))
        batch: dict[str, bytes] = {}
        size = 0
        for product_id, counts in partners.items():
            blob = orjson.dumps(counts)
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
        partners: dict[str, int] = orjson.loads(value)
        ranked = sorted(partners.items(), key=lambda item: (-item[1], item[0]))
        return [PairCount(product_id=q, pair_count=n) for q, n in ranked]

    async def set_neighbors(self, store_id: str, lists: Mapping[str, Sequence[PairCount]]) -> None:
        k = StoreKeys(store_id)
        rows = [
            (product_id, orjson.dumps([(pc.product_id, pc.pair_count) for pc in ranked]))
            for product_id, ranked in lists.items()
        ]
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
        return [PairCount(product_id=q, pair_count=n) for q, n in orjson.loads(data)[:limit]]
