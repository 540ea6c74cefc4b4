"""The embedded default backend: one SQLite file in WAL mode, shared by every local process."""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from collections import Counter
from collections.abc import (
    AsyncIterator,
    Callable,
    Collection,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

import orjson

from ..catalog import Product
from ..exceptions import StoreError
from ..orders import Order, OrderLine, OrderStatus, ProductReturn
from ..policy import StoreRules
from ..types import now_ms
from .base import (
    EMPTY_VISITOR,
    ImportCounts,
    PairCount,
    SignalKind,
    SigningKey,
    StoreRecord,
    VisitorState,
)

T = TypeVar("T")

SCHEMA_VERSION = 1

# `CREATE ... IF NOT EXISTS` throughout: every process that opens the file runs this. It is
# split on ";", so comments in it must not hold one.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS stores (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    publishable_key TEXT NOT NULL UNIQUE,
    secret_key TEXT NOT NULL UNIQUE,
    webhook_secrets TEXT NOT NULL,   -- JSON list, the first one signs
    signing_keys TEXT NOT NULL,      -- JSON list of {"kid", "secret": hex}, the first one signs
    rules TEXT NOT NULL,             -- StoreRules as JSON
    version INTEGER NOT NULL DEFAULT 1,
    baskets INTEGER NOT NULL DEFAULT 0,  -- N: orders with at least one product line
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS products (
    store_id TEXT NOT NULL REFERENCES stores(id),
    id TEXT NOT NULL,
    family TEXT,
    category TEXT NOT NULL,
    data BLOB NOT NULL,              -- the Product as JSON
    PRIMARY KEY (store_id, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS products_by_family ON products (store_id, family);

CREATE TABLE IF NOT EXISTS orders (
    store_id TEXT NOT NULL REFERENCES stores(id),
    id TEXT NOT NULL,
    placed_at_ms INTEGER NOT NULL,
    currency TEXT NOT NULL,
    customer_id TEXT,
    visitor_id TEXT,
    status TEXT NOT NULL,
    PRIMARY KEY (store_id, id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS order_lines (
    store_id TEXT NOT NULL,
    order_id TEXT NOT NULL,
    line_no INTEGER NOT NULL,
    product_id TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    price INTEGER NOT NULL,
    PRIMARY KEY (store_id, order_id, line_no),
    FOREIGN KEY (store_id, order_id) REFERENCES orders (store_id, id) ON DELETE CASCADE
) WITHOUT ROWID;

-- Products an order's buyer sent back, accumulated until they cover the whole order.
CREATE TABLE IF NOT EXISTS order_returns (
    store_id TEXT NOT NULL,
    order_id TEXT NOT NULL,
    product_id TEXT NOT NULL,
    PRIMARY KEY (store_id, order_id, product_id)
) WITHOUT ROWID;

-- subject: 'c:<customer_id>' or 'v:<visitor_id>'.
CREATE TABLE IF NOT EXISTS purchases (
    store_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    product_id TEXT NOT NULL,
    last_ms INTEGER NOT NULL,
    PRIMARY KEY (store_id, subject, product_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS returned (
    store_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    product_id TEXT NOT NULL,
    last_ms INTEGER NOT NULL,
    PRIMARY KEY (store_id, subject, product_id)
) WITHOUT ROWID;

-- Baskets holding each product. `category` is copied from the catalog so best sellers of a
-- category are one index range scan.
CREATE TABLE IF NOT EXISTS product_stats (
    store_id TEXT NOT NULL,
    product_id TEXT NOT NULL,
    baskets INTEGER NOT NULL,
    category TEXT,
    PRIMARY KEY (store_id, product_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS product_stats_best
    ON product_stats (store_id, baskets DESC, product_id);
CREATE INDEX IF NOT EXISTS product_stats_best_by_category
    ON product_stats (store_id, category, baskets DESC, product_id);

-- Undirected co-purchase counts, a < b.
CREATE TABLE IF NOT EXISTS pairs (
    store_id TEXT NOT NULL,
    a TEXT NOT NULL,
    b TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (store_id, a, b)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pairs_by_b ON pairs (store_id, b);

CREATE TABLE IF NOT EXISTS neighbors (
    store_id TEXT NOT NULL,
    product_id TEXT NOT NULL,
    rank INTEGER NOT NULL,
    neighbor_id TEXT NOT NULL,
    pair_count INTEGER NOT NULL,
    PRIMARY KEY (store_id, product_id, rank)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS visitor_signals (
    store_id TEXT NOT NULL,
    visitor_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    product_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS visitor_signals_by_visitor
    ON visitor_signals (store_id, visitor_id, kind, product_id, at_ms);
"""

_STORE_COLUMNS = (
    "id, name, publishable_key, secret_key, webhook_secrets, signing_keys, rules, created_at_ms"
)

# Everything `visitor_state` needs in one statement: purchases and returns of both subjects,
# declines and accepts ever, and impressions since the window start and after the last click.
_VISITOR_STATE = """
SELECT 'p', product_id, MAX(last_ms) FROM purchases
    WHERE store_id = :store AND subject IN (:customer, :visitor) GROUP BY product_id
UNION ALL
SELECT DISTINCT 'r', product_id, 0 FROM returned
    WHERE store_id = :store AND subject IN (:customer, :visitor)
UNION ALL
SELECT DISTINCT kind, product_id, 0 FROM visitor_signals
    WHERE store_id = :store AND visitor_id = :visitor_id AND kind IN ('decline', 'accept')
UNION ALL
SELECT 'impression', s.product_id, COUNT(*) FROM visitor_signals AS s
    WHERE s.store_id = :store AND s.visitor_id = :visitor_id AND s.kind = 'impression'
      AND s.at_ms >= :since
      AND s.at_ms > COALESCE((
          SELECT MAX(c.at_ms) FROM visitor_signals AS c
          WHERE c.store_id = s.store_id AND c.visitor_id = s.visitor_id
            AND c.kind = 'click' AND c.product_id = s.product_id), -1)
    GROUP BY s.product_id
"""

_ADD_PURCHASE = """
INSERT INTO purchases (store_id, subject, product_id, last_ms) VALUES (?, ?, ?, ?)
ON CONFLICT (store_id, subject, product_id) DO UPDATE SET last_ms = MAX(last_ms, excluded.last_ms)
"""

_ADD_RETURNED = """
INSERT INTO returned (store_id, subject, product_id, last_ms) VALUES (?, ?, ?, ?)
ON CONFLICT (store_id, subject, product_id) DO UPDATE SET last_ms = MAX(last_ms, excluded.last_ms)
"""

_ADD_PRODUCT_BASKETS = """
INSERT INTO product_stats (store_id, product_id, baskets, category)
VALUES (?1, ?2, ?3, (SELECT category FROM products WHERE store_id = ?1 AND id = ?2))
ON CONFLICT (store_id, product_id) DO UPDATE SET baskets = baskets + excluded.baskets
"""

_ADD_PAIR = """
INSERT INTO pairs (store_id, a, b, n) VALUES (?, ?, ?, ?)
ON CONFLICT (store_id, a, b) DO UPDATE SET n = n + excluded.n
"""

_UPSERT_PRODUCT = """
INSERT INTO products (store_id, id, family, category, data) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (store_id, id) DO UPDATE
    SET family = excluded.family, category = excluded.category, data = excluded.data
"""

# A return covers its order once every distinct product of the order has been returned.
_ORDER_FULLY_RETURNED = """
SELECT EXISTS (SELECT 1 FROM order_lines WHERE store_id = ?1 AND order_id = ?2)
   AND NOT EXISTS (
       SELECT 1 FROM order_lines AS l
       WHERE l.store_id = ?1 AND l.order_id = ?2 AND NOT EXISTS (
           SELECT 1 FROM order_returns AS r
           WHERE r.store_id = ?1 AND r.order_id = ?2 AND r.product_id = l.product_id))
"""


def _subject_of_customer(customer_id: str) -> str:
    return "c:" + customer_id


def _subject_of_visitor(visitor_id: str) -> str:
    return "v:" + visitor_id


def _order_subjects(customer_id: str | None, visitor_id: str | None) -> list[str]:
    subjects = []
    if customer_id:
        subjects.append(_subject_of_customer(customer_id))
    if visitor_id:
        subjects.append(_subject_of_visitor(visitor_id))
    return subjects


def _ids_json(ids: Iterable[str]) -> bytes:
    # Id lists travel as one JSON parameter (`IN (SELECT value FROM json_each(?))`): no limit
    # on the number of host parameters, and one prepared statement for every size.
    return orjson.dumps(list(ids))


def _dump_product(product: Product) -> bytes:
    return orjson.dumps(product)


def _load_product(data: bytes) -> Product:
    fields: dict[str, Any] = orjson.loads(data)
    for name in ("tags", "complements", "flags"):
        fields[name] = tuple(fields[name])
    return Product(**fields)


def _store_record(row: sqlite3.Row | tuple[Any, ...]) -> StoreRecord:
    (store_id, name, pk, sk, webhook_secrets, signing_keys, rules, created_at_ms) = row
    return StoreRecord(
        id=store_id,
        name=name,
        publishable_key=pk,
        secret_key=sk,
        webhook_secrets=tuple(orjson.loads(webhook_secrets)),
        signing_keys=tuple(
            SigningKey(kid=key["kid"], secret=bytes.fromhex(key["secret"]))
            for key in orjson.loads(signing_keys)
        ),
        rules=StoreRules.model_validate_json(rules),
        created_at_ms=created_at_ms,
    )


@contextmanager
def _wrapped(action: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreError(f"SQLite store could not {action}: {exc}") from exc


def _require_store(conn: sqlite3.Connection, store_id: str) -> None:
    if conn.execute("SELECT 1 FROM stores WHERE id = ?", (store_id,)).fetchone() is None:
        raise StoreError(f"unknown store {store_id!r}")


def _bump_version(conn: sqlite3.Connection, store_id: str) -> None:
    conn.execute("UPDATE stores SET version = version + 1 WHERE id = ?", (store_id,))


def _return_order_products(
    conn: sqlite3.Connection, store_id: str, order_id: str, ret: ProductReturn
) -> None:
    """Note the order's returned products; once they cover the order, it is returned."""
    conn.executemany(
        "INSERT OR IGNORE INTO order_returns (store_id, order_id, product_id) VALUES (?, ?, ?)",
        [(store_id, order_id, product_id) for product_id in ret.product_ids],
    )
    (fully,) = conn.execute(_ORDER_FULLY_RETURNED, (store_id, order_id)).fetchone()
    if fully:
        conn.execute(
            "UPDATE orders SET status = 'returned' WHERE store_id = ? AND id = ?",
            (store_id, order_id),
        )


def _basket_chunk(
    conn: sqlite3.Connection, store_id: str, after: str | None, limit: int
) -> tuple[str | None, list[frozenset[str]]]:
    """The baskets of up to `limit` orders after the order id `after`, and the next cursor."""
    # Every text sorts at or after '', so the first page is `>= ''`: a plain range keeps the
    # primary key doing the work (an `OR ? IS NULL` would make each page a scan).
    op, lo = (">=", "") if after is None else (">", after)
    ids = conn.execute(
        f"SELECT id FROM orders WHERE store_id = ? AND id {op} ? ORDER BY id LIMIT ?",
        (store_id, lo, limit),
    ).fetchall()
    if not ids:
        return None, []
    last: str = ids[-1][0]
    grouped: dict[str, set[str]] = {}
    for order_id, product_id in conn.execute(
        "SELECT order_id, product_id FROM order_lines"
        f" WHERE store_id = ? AND order_id {op} ? AND order_id <= ?",
        (store_id, lo, last),
    ):
        grouped.setdefault(order_id, set()).add(product_id)
    baskets = [frozenset(products) for products in grouped.values()]
    return (last if len(ids) == limit else None), baskets


class SQLiteStore:
    """The `Store` protocol on one SQLite file.

    Two connections per object: reads run directly on the event loop thread (they are
    short, and WAL readers never wait for writers), while every write runs in a worker thread
    on the writer connection, one at a time, inside a `BEGIN IMMEDIATE` transaction, so a big
    import never blocks the loop and a read-then-write is atomic across processes.
    """

    # Orders per round trip of `iter_baskets`.
    basket_chunk = 2000

    def __init__(self, path: str, *, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._reader: sqlite3.Connection | None = None
        self._writer: sqlite3.Connection | None = None
        self._write_lock = asyncio.Lock()
        # `:memory:` is one database per connection, so there is only one connection and
        # every call runs on the loop thread.
        self._in_memory = path == ":memory:"

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        """`sqlite:///relative/path`, `sqlite:////absolute/path` or `sqlite:///:memory:`."""
        prefix = "sqlite:///"
        if not url.startswith(prefix) or len(url) == len(prefix):
            raise ValueError(f"expected sqlite:///<path>, got {url!r}")
        return cls(url[len(prefix) :].split("?", 1)[0])

    # lifecycle

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, cached_statements=256
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    async def open(self) -> None:
        if self._writer is not None:
            return
        with _wrapped("open the database"):
            if not self._in_memory:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            writer = self._connect()
            try:
                if not self._in_memory:
                    # Persistent in the file; needs no transaction of ours.
                    writer.execute("PRAGMA journal_mode = WAL")
                writer.execute("PRAGMA temp_store = MEMORY")
                writer.execute("PRAGMA cache_size = -65536")  # 64 MiB for bulk writes
                self._migrate(writer)
                reader = writer if self._in_memory else self._connect()
            except BaseException:
                writer.close()
                raise
        self._writer, self._reader = writer, reader

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return  # the common case: no write lock needed to open
        conn.execute("BEGIN IMMEDIATE")
        try:
            (found,) = conn.execute("PRAGMA user_version").fetchone()
            if found > SCHEMA_VERSION:
                raise StoreError(
                    f"database schema version {found} is newer than this release's {SCHEMA_VERSION}"
                )
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        reader, writer = self._reader, self._writer
        self._reader = self._writer = None
        if writer is None:
            return
        async with self._write_lock:  # let a write in flight finish
            with _wrapped("close the database"):
                if reader is not None and reader is not writer:
                    reader.close()
                writer.close()

    async def ping(self) -> None:
        with _wrapped("answer a ping"):
            self._read_conn().execute("SELECT 1").fetchone()

    # plumbing

    def _read_conn(self) -> sqlite3.Connection:
        if self._reader is None:
            raise StoreError("SQLite store is not open")
        return self._reader

    def _query(self, action: str, sql: str, params: Any = ()) -> list[Any]:
        """A read on the loop thread."""
        conn = self._read_conn()
        with _wrapped(action):
            return conn.execute(sql, params).fetchall()

    async def _write(self, action: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in one `BEGIN IMMEDIATE` transaction on the writer, off the loop."""
        if self._writer is None:
            raise StoreError("SQLite store is not open")
        writer = self._writer
        async with self._write_lock:
            if self._in_memory:
                return self._transact(writer, action, fn)
            return await asyncio.to_thread(self._transact, writer, action, fn)

    @staticmethod
    def _transact(
        conn: sqlite3.Connection, action: str, fn: Callable[[sqlite3.Connection], T]
    ) -> T:
        with _wrapped(action):
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

    async def _bulk_read(self, action: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A long read in a worker thread, on the writer connection (between writes)."""
        if self._writer is None:
            raise StoreError("SQLite store is not open")
        writer = self._writer
        async with self._write_lock:
            with _wrapped(action):
                if self._in_memory:
                    return fn(writer)
                return await asyncio.to_thread(fn, writer)

    # tenants

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
        record = StoreRecord(
            id=store_id or "st_" + secrets.token_hex(8),
            name=name,
            publishable_key=publishable_key or "pk_" + secrets.token_urlsafe(18),
            secret_key=secret_key or "sk_" + secrets.token_urlsafe(24),
            webhook_secrets=(webhook_secret or "whsec_" + secrets.token_urlsafe(24),),
            signing_keys=(SigningKey(kid="k1", secret=secrets.token_bytes(32)),),
            rules=rules or StoreRules(),
            created_at_ms=now_ms(),
        )
        row = (
            record.id,
            record.name,
            record.publishable_key,
            record.secret_key,
            orjson.dumps(list(record.webhook_secrets)).decode(),
            orjson.dumps(
                [{"kid": key.kid, "secret": key.secret.hex()} for key in record.signing_keys]
            ).decode(),
            record.rules.model_dump_json(),
            record.created_at_ms,
        )

        def insert(conn: sqlite3.Connection) -> None:
            taken = conn.execute(
                "SELECT 1 FROM stores WHERE id = ?1 OR publishable_key IN (?2, ?3)"
                " OR secret_key IN (?2, ?3)",
                (record.id, record.publishable_key, record.secret_key),
            ).fetchone()
            if taken is not None:
                raise StoreError(f"store id or key of {record.id!r} is already taken")
            conn.execute(f"INSERT INTO stores ({_STORE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)", row)

        await self._write("create a store", insert)
        return record

    async def get_store(self, store_id: str) -> StoreRecord | None:
        rows = self._query(
            "read a store", f"SELECT {_STORE_COLUMNS} FROM stores WHERE id = ?", (store_id,)
        )
        return _store_record(rows[0]) if rows else None

    async def store_by_key(self, key: str) -> StoreRecord | None:
        rows = self._query(
            "resolve a key",
            f"SELECT {_STORE_COLUMNS} FROM stores WHERE publishable_key = ?1"
            f" UNION ALL SELECT {_STORE_COLUMNS} FROM stores WHERE secret_key = ?1",
            (key,),
        )
        return _store_record(rows[0]) if rows else None

    async def set_rules(self, store_id: str, rules: StoreRules) -> StoreRecord:
        def update(conn: sqlite3.Connection) -> StoreRecord:
            row = conn.execute(
                "UPDATE stores SET rules = ?, version = version + 1 WHERE id = ?"
                f" RETURNING {_STORE_COLUMNS}",
                (rules.model_dump_json(), store_id),
            ).fetchone()
            if row is None:
                raise StoreError(f"unknown store {store_id!r}")
            return _store_record(row)

        return await self._write("set rules", update)

    async def version(self, store_id: str) -> int:
        rows = self._query("read a version", "SELECT version FROM stores WHERE id = ?", (store_id,))
        return int(rows[0][0]) if rows else 0

    # catalog

    async def upsert_products(self, store_id: str, products: Sequence[Product]) -> int:
        rows = [(store_id, p.id, p.family, p.category, _dump_product(p)) for p in products]

        def upsert(conn: sqlite3.Connection) -> None:
            _require_store(conn, store_id)
            if not rows:
                return
            conn.executemany(_UPSERT_PRODUCT, rows)
            # Keep the best-seller index's copy of each category in step with the catalog.
            conn.executemany(
                "UPDATE product_stats SET category = ?3"
                " WHERE store_id = ?1 AND product_id = ?2 AND category IS NOT ?3",
                [(store_id, p.id, p.category) for p in products],
            )
            _bump_version(conn, store_id)

        await self._write("upsert products", upsert)
        return len(rows)

    async def get_products(self, store_id: str, ids: Collection[str]) -> dict[str, Product]:
        if not ids:
            return {}
        rows = self._query(
            "read products",
            "SELECT id, data FROM products"
            " WHERE store_id = ? AND id IN (SELECT value FROM json_each(?))",
            (store_id, _ids_json(ids)),
        )
        return {product_id: _load_product(data) for product_id, data in rows}

    async def list_products(
        self, store_id: str, limit: int, after: str | None = None
    ) -> list[Product]:
        if after is None:
            sql = "SELECT data FROM products WHERE store_id = ? ORDER BY id LIMIT ?"
            params: tuple[Any, ...] = (store_id, limit)
        else:
            sql = "SELECT data FROM products WHERE store_id = ? AND id > ? ORDER BY id LIMIT ?"
            params = (store_id, after, limit)
        return [_load_product(data) for (data,) in self._query("list products", sql, params)]

    async def family_products(self, store_id: str, family: str) -> list[Product]:
        rows = self._query(
            "read a family",
            "SELECT data FROM products WHERE store_id = ? AND family = ? ORDER BY id",
            (store_id, family),
        )
        return [_load_product(data) for (data,) in rows]

    async def best_sellers(
        self, store_id: str, category: str | None, limit: int
    ) -> list[tuple[str, int]]:
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
        return [(pid, n) for pid, n in self._query("read best sellers", sql, params)]

    # orders and returns

    async def add_orders(self, store_id: str, orders: Sequence[Order]) -> ImportCounts:
        def add(conn: sqlite3.Connection) -> ImportCounts:
            _require_store(conn, store_id)
            existing = {
                order_id
                for (order_id,) in conn.execute(
                    "SELECT id FROM orders"
                    " WHERE store_id = ? AND id IN (SELECT value FROM json_each(?))",
                    (store_id, _ids_json(o.id for o in orders)),
                )
            }
            new_orders: list[Order] = []
            for order in orders:
                if order.id not in existing:
                    existing.add(order.id)  # a repeat inside the batch is a duplicate too
                    new_orders.append(order)
            if not new_orders:
                return ImportCounts(imported=0, duplicates=len(orders))

            conn.executemany(
                "INSERT INTO orders (store_id, id, placed_at_ms, currency, customer_id,"
                " visitor_id, status) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        store_id,
                        o.id,
                        o.placed_at_ms,
                        o.currency,
                        o.customer_id,
                        o.visitor_id,
                        o.status,
                    )
                    for o in new_orders
                ],
            )
            conn.executemany(
                "INSERT INTO order_lines (store_id, order_id, line_no, product_id, quantity,"
                " price) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    (store_id, o.id, line_no, line.product_id, line.quantity, line.price)
                    for o in new_orders
                    for line_no, line in enumerate(o.lines)
                ),
            )
            # Aggregate before writing: one row per (subject, product) and per product.
            last_bought: dict[tuple[str, str], int] = {}
            baskets: Counter[str] = Counter()
            basket_total = 0
            for o in new_orders:
                products = o.product_ids
                if not products:
                    continue
                basket_total += 1
                baskets.update(products)
                for subject in _order_subjects(o.customer_id, o.visitor_id):
                    for product_id in products:
                        key = (subject, product_id)
                        if last_bought.get(key, -1) < o.placed_at_ms:
                            last_bought[key] = o.placed_at_ms
            conn.executemany(
                _ADD_PURCHASE,
                ((store_id, subject, pid, ms) for (subject, pid), ms in last_bought.items()),
            )
            conn.executemany(
                _ADD_PRODUCT_BASKETS, ((store_id, pid, n) for pid, n in baskets.items())
            )
            conn.execute(
                "UPDATE stores SET baskets = baskets + ?, version = version + 1 WHERE id = ?",
                (basket_total, store_id),
            )
            return ImportCounts(
                imported=len(new_orders),
                duplicates=len(orders) - len(new_orders),
                new_orders=tuple(new_orders),
            )

        return await self._write("add orders", add)

    async def get_order(self, store_id: str, order_id: str) -> Order | None:
        rows = self._query(
            "read an order",
            "SELECT o.placed_at_ms, o.currency, o.customer_id, o.visitor_id, o.status,"
            " l.product_id, l.quantity, l.price"
            " FROM orders AS o LEFT JOIN order_lines AS l"
            " ON l.store_id = o.store_id AND l.order_id = o.id"
            " WHERE o.store_id = ? AND o.id = ? ORDER BY l.line_no",
            (store_id, order_id),
        )
        if not rows:
            return None
        placed_at_ms, currency, customer_id, visitor_id, status = rows[0][:5]
        return Order(
            id=order_id,
            placed_at_ms=placed_at_ms,
            currency=currency,
            lines=tuple(
                OrderLine(product_id=row[5], quantity=row[6], price=row[7])
                for row in rows
                if row[5] is not None
            ),
            customer_id=customer_id,
            visitor_id=visitor_id,
            status=cast(OrderStatus, status),
        )

    async def add_returns(self, store_id: str, returns: Sequence[ProductReturn]) -> int:
        def add(conn: sqlite3.Connection) -> int:
            _require_store(conn, store_id)
            recorded = 0
            rows: list[tuple[str, str, str, int]] = []
            for ret in returns:
                subjects = _order_subjects(ret.customer_id, None)
                order = None
                if ret.order_id is not None:
                    order = conn.execute(
                        "SELECT customer_id, visitor_id FROM orders WHERE store_id = ? AND id = ?",
                        (store_id, ret.order_id),
                    ).fetchone()
                if order is not None:
                    subjects.extend(_order_subjects(*order))
                    _return_order_products(conn, store_id, cast(str, ret.order_id), ret)
                elif not subjects:
                    continue  # neither a known order nor a customer: nobody to attach it to
                recorded += 1
                rows.extend(
                    (store_id, subject, product_id, ret.at_ms)
                    for subject in dict.fromkeys(subjects)
                    for product_id in ret.product_ids
                )
            conn.executemany(_ADD_RETURNED, rows)
            if recorded:
                _bump_version(conn, store_id)
            return recorded

        return await self._write("add returns", add)

    async def iter_baskets(self, store_id: str) -> AsyncIterator[frozenset[str]]:
        after: str | None = None
        while True:
            after, baskets = await self._bulk_read(
                "read baskets",
                partial(_basket_chunk, store_id=store_id, after=after, limit=self.basket_chunk),
            )
            for basket in baskets:
                yield basket
            if after is None:
                return

    # affinity

    async def basket_count(self, store_id: str) -> int:
        rows = self._query(
            "read the basket count", "SELECT baskets FROM stores WHERE id = ?", (store_id,)
        )
        return int(rows[0][0]) if rows else 0

    async def product_basket_counts(self, store_id: str, ids: Collection[str]) -> dict[str, int]:
        if not ids:
            return {}
        rows = self._query(
            "read basket counts",
            "SELECT product_id, baskets FROM product_stats"
            " WHERE store_id = ? AND product_id IN (SELECT value FROM json_each(?))",
            (store_id, _ids_json(ids)),
        )
        return {pid: n for pid, n in rows}

    async def add_pair_counts(
        self, store_id: str, increments: Mapping[tuple[str, str], int]
    ) -> None:
        rows = [
            (store_id, a, b, n) if a < b else (store_id, b, a, n)
            for (a, b), n in increments.items()
            if a != b
        ]

        def add(conn: sqlite3.Connection) -> None:
            _require_store(conn, store_id)
            if rows:
                conn.executemany(_ADD_PAIR, rows)
                _bump_version(conn, store_id)

        await self._write("add pair counts", add)

    async def replace_pair_counts(
        self, store_id: str, pairs: Iterable[tuple[str, str, int]]
    ) -> None:
        def replace(conn: sqlite3.Connection) -> None:
            _require_store(conn, store_id)
            conn.execute("DELETE FROM pairs WHERE store_id = ?", (store_id,))
            conn.executemany(
                "INSERT INTO pairs (store_id, a, b, n) VALUES (?, ?, ?, ?)",
                (
                    (store_id, a, b, n) if a < b else (store_id, b, a, n)
                    for a, b, n in pairs
                    if a != b
                ),
            )
            _bump_version(conn, store_id)

        await self._write("replace pair counts", replace)

    async def pair_counts(self, store_id: str, product_id: str) -> list[PairCount]:
        rows = self._query(
            "read pair counts",
            "SELECT b, n FROM pairs WHERE store_id = ?1 AND a = ?2"
            " UNION ALL SELECT a, n FROM pairs WHERE store_id = ?1 AND b = ?2"
            " ORDER BY 2 DESC, 1",
            (store_id, product_id),
        )
        return [PairCount(product_id=pid, pair_count=n) for pid, n in rows]

    async def set_neighbors(self, store_id: str, lists: Mapping[str, Sequence[PairCount]]) -> None:
        def replace(conn: sqlite3.Connection) -> None:
            _require_store(conn, store_id)
            if not lists:
                return
            conn.executemany(
                "DELETE FROM neighbors WHERE store_id = ? AND product_id = ?",
                [(store_id, pid) for pid in lists],
            )
            conn.executemany(
                "INSERT INTO neighbors (store_id, product_id, rank, neighbor_id, pair_count)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    (store_id, pid, rank, pc.product_id, pc.pair_count)
                    for pid, ranked in lists.items()
                    for rank, pc in enumerate(ranked)
                ),
            )
            _bump_version(conn, store_id)

        await self._write("set neighbours", replace)

    async def neighbors(self, store_id: str, product_id: str, limit: int) -> list[PairCount]:
        rows = self._query(
            "read neighbours",
            "SELECT neighbor_id, pair_count FROM neighbors WHERE store_id = ? AND product_id = ?"
            " ORDER BY rank LIMIT ?",
            (store_id, product_id, limit),
        )
        return [PairCount(product_id=pid, pair_count=n) for pid, n in rows]

    # per-visitor state

    async def visitor_state(
        self, store_id: str, visitor_id: str | None, customer_id: str | None, since_ms: int
    ) -> VisitorState:
        if not visitor_id and not customer_id:
            return EMPTY_VISITOR
        rows = self._query(
            "read visitor state",
            _VISITOR_STATE,
            {
                "store": store_id,
                "customer": _subject_of_customer(customer_id) if customer_id else None,
                "visitor": _subject_of_visitor(visitor_id) if visitor_id else None,
                "visitor_id": visitor_id,
                "since": since_ms,
            },
        )
        purchased: dict[str, int] = {}
        returned: set[str] = set()
        declined: set[str] = set()
        accepted: set[str] = set()
        impressions: dict[str, int] = {}
        for kind, product_id, value in rows:
            if kind == "p":
                purchased[product_id] = value
            elif kind == "r":
                returned.add(product_id)
            elif kind == "decline":
                declined.add(product_id)
            elif kind == "accept":
                accepted.add(product_id)
            else:
                impressions[product_id] = value
        return VisitorState(
            purchased=purchased,
            returned=frozenset(returned),
            declined=frozenset(declined),
            accepted=frozenset(accepted),
            impressions=impressions,
        )

    async def record_visitor_signal(
        self, store_id: str, visitor_id: str, product_id: str, kind: SignalKind, at_ms: int
    ) -> None:
        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO visitor_signals (store_id, visitor_id, kind, product_id, at_ms)"
                " VALUES (?, ?, ?, ?, ?)",
                (store_id, visitor_id, kind, product_id, at_ms),
            )

        await self._write("record a visitor signal", insert)
