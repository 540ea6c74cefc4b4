"""SQLite's OrderStore: orders and returns, with each buyer's purchases and the basket counts."""

from __future__ import annotations

import sqlite3
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from functools import partial
from typing import Any, cast

import orjson

from offer_service.domain.orders import Order, OrderLine, OrderStatus, ProductReturn
from offer_service.domain.records import ImportCounts
from offer_service.storage.codec import (
    basket,
    line_rows,
    load_lines,
    subject_visitor,
    subjects,
)
from offer_service.storage.sqlite.connection import (
    IN_IDS,
    SQLiteConnection,
    bump_version,
    ids_param,
    require_store,
)

_INSERT_ORDER = """
INSERT INTO orders (store_id, id, placed_at_ms, currency, customer_id, visitor_id, status, lines)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""

_ADD_PRODUCT_BASKETS = """
INSERT INTO product_stats (store_id, product_id, baskets, category)
VALUES (?1, ?2, ?3, (SELECT category FROM products WHERE store_id = ?1 AND id = ?2))
ON CONFLICT (store_id, product_id) DO UPDATE SET baskets = baskets + excluded.baskets
"""

_ADD_RETURNED = """
INSERT INTO returned (store_id, subject, product_id, last_ms) VALUES (?, ?, ?, ?)
ON CONFLICT (store_id, subject, product_id) DO UPDATE SET last_ms = MAX(last_ms, excluded.last_ms)
"""

# A purchase or return under a visitor's id is also a row of visitor_signals (kind 'purchase' or
# 'return', no product; `visitor_state` reads neither kind): `visitor_changes` then names the
# visitor to every process, as it does for a decline.
_NOTE_VISITOR = """
INSERT INTO visitor_signals (store_id, visitor_id, kind, product_id, at_ms) VALUES (?, ?, ?, '', ?)
"""

_BASKETS_PAGE = """
SELECT id, lines FROM orders WHERE store_id = ? AND id {op} ? ORDER BY id LIMIT ?
"""


_ORDER_COLUMNS = "id, placed_at_ms, currency, customer_id, visitor_id, status, lines, returned"


def _order(row: tuple[Any, ...]) -> Order:
    order_id, placed_at_ms, currency, customer_id, visitor_id, status, lines, returned = row
    return Order(
        id=order_id,
        placed_at_ms=placed_at_ms,
        currency=currency,
        lines=load_lines(orjson.loads(lines)),
        customer_id=customer_id,
        visitor_id=visitor_id,
        status=cast(OrderStatus, status),
        returned=tuple(orjson.loads(returned)),
    )


def _add_purchases(conn: sqlite3.Connection, store_id: str, orders: Sequence[Order]) -> None:
    """Fold the orders' products into each buyer's {product: last purchase ms}."""
    bought: defaultdict[str, dict[str, int]] = defaultdict(dict)
    for order in orders:
        for subject in subjects(order.customer_id, order.visitor_id):
            last = bought[subject]
            for product_id in order.product_ids:
                if last.get(product_id, -1) < order.placed_at_ms:
                    last[product_id] = order.placed_at_ms
    if not bought:
        return
    for subject, products in conn.execute(
        f"SELECT subject, products FROM purchases WHERE store_id = ? AND subject {IN_IDS}",
        (store_id, ids_param(bought)),
    ):
        last = orjson.loads(products)
        for product_id, ms in bought[subject].items():
            if last.get(product_id, -1) < ms:
                last[product_id] = ms
        bought[subject] = last
    conn.executemany(
        "INSERT OR REPLACE INTO purchases (store_id, subject, products) VALUES (?, ?, ?)",
        [(store_id, subject, orjson.dumps(last)) for subject, last in bought.items()],
    )


def _note_visitors(
    conn: sqlite3.Connection, store_id: str, kind: str, visits: Iterable[tuple[str, int]]
) -> None:
    """List (visitor id, ms) pairs in the change feed as a purchase or a return."""
    conn.executemany(_NOTE_VISITOR, [(store_id, v, kind, ms) for v, ms in dict(visits).items()])


def add_bought_line(
    conn: sqlite3.Connection, store_id: str, order_id: str, line: OrderLine, at_ms: int
) -> None:
    """An accepted offer joins its order: a line, a purchase by the order's buyer, an accept
    signal for the order's subject (so no surface offers it to them again)."""
    row = conn.execute(
        "SELECT id, placed_at_ms, currency, customer_id, visitor_id, lines FROM orders"
        " WHERE store_id = ? AND id = ?",
        (store_id, order_id),
    ).fetchone()
    if row is None:
        return
    oid, _placed_at_ms, currency, customer_id, visitor_id, lines = row
    merged = [*orjson.loads(lines), *line_rows([line])]
    conn.execute(
        "UPDATE orders SET lines = ? WHERE store_id = ? AND id = ?",
        (orjson.dumps(merged), store_id, order_id),
    )
    bought = Order(oid, at_ms, currency, (line,), customer_id, visitor_id)
    _add_purchases(conn, store_id, [bought])
    conn.execute(
        "INSERT INTO visitor_signals (store_id, visitor_id, kind, product_id, at_ms)"
        " VALUES (?, ?, 'accept', ?, ?)",
        (store_id, visitor_id or f"order:{order_id}", line.product_id, at_ms),
    )


def _return_from_order(
    conn: sqlite3.Connection, store_id: str, ret: ProductReturn
) -> list[str] | None:
    """Note products sent back from an order; the order is returned once they cover it.
    The order's buyer subjects, or None for an unknown order."""
    row = conn.execute(
        "SELECT customer_id, visitor_id, lines, returned FROM orders WHERE store_id = ? AND id = ?",
        (store_id, ret.order_id),
    ).fetchone()
    if row is None:
        return None
    customer_id, visitor_id, lines, returned = row
    now_returned = set(orjson.loads(returned)) | set(ret.product_ids)
    products = basket(orjson.loads(lines))
    conn.execute(
        "UPDATE orders SET returned = ?,"
        " status = CASE WHEN ? THEN 'returned' ELSE status END WHERE store_id = ? AND id = ?",
        (
            orjson.dumps(sorted(now_returned)),
            bool(products) and products <= now_returned,
            store_id,
            ret.order_id,
        ),
    )
    return subjects(customer_id, visitor_id)


def _baskets_page(
    conn: sqlite3.Connection, store_id: str, after: str | None, limit: int
) -> tuple[str | None, list[frozenset[str]]]:
    """The baskets of up to `limit` orders after the order id `after`, and the next cursor."""
    # Every text sorts at or after '', so the first page is `>= ''`: a plain range keeps the
    # primary key doing the work where `? IS NULL OR id > ?` would scan from the start.
    op, low = (">=", "") if after is None else (">", after)
    rows = conn.execute(_BASKETS_PAGE.format(op=op), (store_id, low, limit)).fetchall()
    baskets = [b for b in (basket(orjson.loads(lines)) for _, lines in rows) if b]
    return (rows[-1][0] if len(rows) == limit else None), baskets


def _record_orders(conn: sqlite3.Connection, store_id: str, orders: Sequence[Order]) -> None:
    """Write new orders, their buyers' purchases and the basket counts; bump the version."""
    conn.executemany(
        _INSERT_ORDER,
        [
            (
                store_id,
                o.id,
                o.placed_at_ms,
                o.currency,
                o.customer_id,
                o.visitor_id,
                o.status,
                orjson.dumps(line_rows(o.lines)),
            )
            for o in orders
        ],
    )
    _add_purchases(conn, store_id, orders)
    _note_visitors(
        conn, store_id, "purchase", ((o.visitor_id, o.placed_at_ms) for o in orders if o.visitor_id)
    )
    baskets: Counter[str] = Counter()
    with_lines = 0
    for order in orders:
        products = order.product_ids  # a product counts once per basket
        if products:
            with_lines += 1
            baskets.update(products)
    conn.executemany(
        _ADD_PRODUCT_BASKETS, [(store_id, product_id, n) for product_id, n in baskets.items()]
    )
    conn.execute(
        "UPDATE stores SET baskets = baskets + ?, version = version + 1 WHERE id = ?",
        (with_lines, store_id),
    )


class SQLiteOrders(SQLiteConnection):
    """The OrderStore part of the Store protocol."""

    # Orders per round trip of `iter_baskets`.
    baskets_page_size = 2000

    async def add_orders(self, store_id: str, orders: Sequence[Order]) -> ImportCounts:
        def add(conn: sqlite3.Connection) -> ImportCounts:
            require_store(conn, store_id)
            seen = {
                order_id
                for (order_id,) in conn.execute(
                    f"SELECT id FROM orders WHERE store_id = ? AND id {IN_IDS}",
                    (store_id, ids_param(o.id for o in orders)),
                )
            }
            new_orders: list[Order] = []
            for order in orders:
                if order.id not in seen:
                    seen.add(order.id)  # a repeat inside the batch is a duplicate too
                    new_orders.append(order)
            if new_orders:
                _record_orders(conn, store_id, new_orders)
            return ImportCounts(
                imported=len(new_orders),
                duplicates=len(orders) - len(new_orders),
                new_orders=tuple(new_orders),
            )

        return await self._write("add orders", add)

    async def get_order(self, store_id: str, order_id: str) -> Order | None:
        rows = self._query(
            "read an order",
            f"SELECT {_ORDER_COLUMNS} FROM orders WHERE store_id = ? AND id = ?",
            (store_id, order_id),
        )
        return _order(rows[0]) if rows else None

    async def iter_orders(
        self, store_id: str, since_ms: int, until_ms: int
    ) -> AsyncIterator[Order]:
        rows = self._query(
            "read orders",
            f"SELECT {_ORDER_COLUMNS} FROM orders WHERE store_id = ?"
            " AND placed_at_ms >= ? AND placed_at_ms < ? ORDER BY placed_at_ms, id",
            (store_id, since_ms, until_ms),
        )
        for row in rows:
            yield _order(row)

    async def add_returns(self, store_id: str, returns: Sequence[ProductReturn]) -> int:
        """Record returns against the customer named and the order's buyer; the count of
        returns that named a known order or a customer (others have nobody to attach to)."""

        def add(conn: sqlite3.Connection) -> int:
            require_store(conn, store_id)
            recorded = 0
            rows: list[tuple[str, str, str, int]] = []
            for ret in returns:
                names = subjects(ret.customer_id, None)
                buyers = None if ret.order_id is None else _return_from_order(conn, store_id, ret)
                if buyers is None and not names:
                    continue
                recorded += 1
                names.extend(buyers or ())
                rows.extend(
                    (store_id, subject, product_id, ret.at_ms)
                    for subject in dict.fromkeys(names)
                    for product_id in ret.product_ids
                )
            conn.executemany(_ADD_RETURNED, rows)
            visits = ((subject_visitor(row[1]), row[3]) for row in rows)
            _note_visitors(conn, store_id, "return", ((v, ms) for v, ms in visits if v))
            if recorded:
                bump_version(conn, store_id)
            return recorded

        return await self._write("add returns", add)

    async def iter_baskets(self, store_id: str) -> AsyncIterator[frozenset[str]]:
        # Pages by order id, each its own short read: no read transaction stays open across
        # the caller's awaits (it would stop WAL checkpoints).
        after: str | None = None
        while True:
            after, baskets = await self._on_writer(
                "read baskets",
                partial(
                    _baskets_page, store_id=store_id, after=after, limit=self.baskets_page_size
                ),
            )
            for products in baskets:
                yield products
            if after is None:
                return
