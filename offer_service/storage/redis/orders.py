"""Redis: orders and returns, with each buyer's purchases and the basket counts.

An order is one hash field (its JSON, in the SQLite backend's column order); returns and a
completed accept rewrite it with a compare-and-set script, so two writers never lose each
other's change.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson

from offer_service.domain.orders import Order, ProductReturn
from offer_service.domain.records import ImportCounts
from offer_service.exceptions import StoreError
from offer_service.storage.codec import basket, line_rows, load_lines, subjects
from offer_service.storage.redis.client import CAS_ATTEMPTS, RedisBase, chunks, flat, sha1
from offer_service.storage.redis.keys import StoreKeys
from offer_service.storage.redis.scripts.orders import ADD_ORDERS, ADD_RETURNS

# Sizes of one script call or one command: big enough to amortise the round trip, small enough
# that Redis (single-threaded) never stalls other clients for long.
ORDER_LINES_PER_SCRIPT = 5000
RETURNS_PER_SCRIPT = 500
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
            line_rows(o.lines),
            list(o.returned),
        ]
    )


def _order(order_id: str, data: bytes) -> Order:
    placed, currency, customer, visitor, status, lines, returned = orjson.loads(data)
    return Order(
        id=order_id,
        placed_at_ms=placed,
        currency=currency,
        lines=load_lines(lines),
        customer_id=customer,
        visitor_id=visitor,
        status=status,
        returned=tuple(returned),
    )


class RedisOrders(RedisBase):
    """The OrderStore part of the Store protocol."""

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
                    bought = basket(order[5])
                    order[6] = sorted(returned)
                    if bought and bought <= returned:
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
                products = basket(orjson.loads(data)[5])
                if products:
                    yield products
            if cursor == 0:
                return
