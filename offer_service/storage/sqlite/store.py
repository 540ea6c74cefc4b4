"""The embedded default backend: one SQLite file in WAL mode, shared by every local process."""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
import time
import weakref
from collections import Counter, defaultdict
from collections.abc import (
    AsyncIterator,
    Callable,
    Collection,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

import orjson

from offer_service.domain.orders import Order, OrderLine, OrderStatus, ProductReturn
from offer_service.domain.policy import StoreRules
from offer_service.domain.products import Product
from offer_service.domain.records import (
    EMPTY_VISITOR,
    ImportCounts,
    PairCount,
    SignalKind,
    SigningKey,
    StoreRecord,
    VisitorChanges,
    VisitorState,
)
from offer_service.exceptions import StoreError
from offer_service.storage.protocols import VISITOR_CHANGES_MAX
from offer_service.storage.sqlite.commerce import SCHEMA as COMMERCE_SCHEMA
from offer_service.storage.sqlite.commerce import SQLiteCommerce
from offer_service.storage.sqlite.commerce import upgrade as upgrade_commerce
from offer_service.storage.sqlite.events import EventIds, in_transaction
from offer_service.storage.sqlite.journeys import SCHEMA as JOURNEY_SCHEMA
from offer_service.storage.sqlite.journeys import SQLiteJourneys
from offer_service.storage.sqlite.keys import SCHEMA as KEYS_SCHEMA
from offer_service.storage.sqlite.keys import SQLiteKeys
from offer_service.types import now_ms

T = TypeVar("T")

# How long reads may share one read transaction (see SQLiteStore._snapshot).
SNAPSHOT_MAX_S = 0.01

# The WAL is copied into the database by a passive checkpoint on its own connection, at most
# this often after writes, so that no write waits for one (a commit is durable once in the WAL).
CHECKPOINT_INTERVAL_S = 0.1
# Reads see the file through a memory map (SQLite caps the size at its build's limit, 2 GB in
# the common builds): a page the OS holds costs a memory access instead of a read() and a copy
# into SQLite's own cache. Cold answers on a big catalog read pages all over the file: on one of
# 1M products, 1.9 ms of CPU per cold cart instead of 2.8 (in process). The mapped pages are the
# OS's file cache, shared and reclaimable; they count in the process's resident size as RssFile.
READ_MAP_BYTES = 1 << 32

# The writer checkpoints by itself only if the WAL grows past this many pages regardless.
WRITER_CHECKPOINT_PAGES = 16384

SCHEMA_VERSION = 7

# Data is kept in the shape it is read: an order's lines in its row, a shopper's purchases in
# one row, a product's co-purchase counts and neighbour list in one row each. Importing 20k
# orders or replacing millions of pair counts then writes thousands of rows, not millions
# (a B-tree insert costs about a microsecond even from C; Python's per-row binding more).
#
# `CREATE ... IF NOT EXISTS` throughout: every process that opens the file may run this.
# It is split on ";", so comments in it must not hold one.
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
    store_id TEXT NOT NULL REFERENCES stores (id),
    id TEXT NOT NULL,
    family TEXT,
    category TEXT NOT NULL,
    data BLOB NOT NULL,              -- the Product as JSON
    PRIMARY KEY (store_id, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS products_by_family ON products (store_id, family);

CREATE TABLE IF NOT EXISTS orders (
    store_id TEXT NOT NULL REFERENCES stores (id),
    id TEXT NOT NULL,
    placed_at_ms INTEGER NOT NULL,
    currency TEXT NOT NULL,
    customer_id TEXT,
    visitor_id TEXT,
    status TEXT NOT NULL,
    lines BLOB NOT NULL,             -- JSON [[product_id, quantity, unit price], ...]
    returned BLOB NOT NULL DEFAULT '[]',  -- JSON list of the product ids sent back so far
    PRIMARY KEY (store_id, id)
) WITHOUT ROWID;
-- Orders by time (the learner's and the reports' reads): without it a read of the last minutes
-- scans every order the store ever had.
CREATE INDEX IF NOT EXISTS orders_by_time ON orders (store_id, placed_at_ms);

-- subject: 'c:<customer_id>' or 'v:<visitor_id>'. products: JSON {product_id: last epoch ms}.
CREATE TABLE IF NOT EXISTS purchases (
    store_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    products BLOB NOT NULL,
    PRIMARY KEY (store_id, subject)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS returned (
    store_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    product_id TEXT NOT NULL,
    last_ms INTEGER NOT NULL,
    PRIMARY KEY (store_id, subject, product_id)
) WITHOUT ROWID;

-- Baskets holding each product. `category` is copied from the catalog so that the best
-- sellers of a category are one index range scan.
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

-- Undirected co-purchase counts, kept under both products: JSON {partner_id: baskets}.
CREATE TABLE IF NOT EXISTS pair_counts (
    store_id TEXT NOT NULL,
    product_id TEXT NOT NULL,
    partners BLOB NOT NULL,
    PRIMARY KEY (store_id, product_id)
) WITHOUT ROWID;

-- Precomputed top-K lists, best first: JSON [[neighbor_id, pair_count], ...].
CREATE TABLE IF NOT EXISTS neighbors (
    store_id TEXT NOT NULL,
    product_id TEXT NOT NULL,
    ranked BLOB NOT NULL,
    PRIMARY KEY (store_id, product_id)
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

# Ids lists travel as one JSON parameter: no limit on host parameters, one cached statement.
_IN_IDS = "IN (SELECT value FROM json_each(?))"

# Everything `visitor_state` needs in one statement: the purchases of both subjects, their
# returns, declines and accepts ever, and impressions since the window start that came after
# the last click on the product (a click resets the frequency cap).
_VISITOR_STATE = """
SELECT 'purchases', subject, products FROM purchases
    WHERE store_id = :store AND subject IN (:customer, :visitor)
UNION ALL
SELECT 'return', product_id, 0 FROM returned
    WHERE store_id = :store AND subject IN (:customer, :visitor)
UNION ALL
SELECT kind, product_id, at_ms FROM visitor_signals
    WHERE store_id = :store AND visitor_id = :visitor_id
      AND (kind IN ('decline', 'accept') OR (kind IN ('impression', 'click') AND at_ms >= :since))
"""

_UPSERT_PRODUCT = """
INSERT INTO products (store_id, id, family, category, data) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (store_id, id) DO UPDATE
    SET family = excluded.family, category = excluded.category, data = excluded.data
"""

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

_BASKETS_PAGE = """
SELECT id, lines FROM orders WHERE store_id = ? AND id {op} ? ORDER BY id LIMIT ?
"""


def _customer_subject(customer_id: str) -> str:
    return "c:" + customer_id


def _visitor_subject(visitor_id: str) -> str:
    return "v:" + visitor_id


def _subjects(customer_id: str | None, visitor_id: str | None) -> list[str]:
    subjects = []
    if customer_id:
        subjects.append(_customer_subject(customer_id))
    if visitor_id:
        subjects.append(_visitor_subject(visitor_id))
    return subjects


def _ids(ids: Iterable[str]) -> bytes:
    return orjson.dumps(list(ids))


def _load_product(data: bytes) -> Product:
    fields: dict[str, Any] = orjson.loads(data)
    for name in ("tags", "complements", "flags"):
        fields[name] = tuple(fields[name])
    return Product(**fields)


def _dump_lines(lines: Sequence[OrderLine]) -> bytes:
    return orjson.dumps([(line.product_id, line.quantity, line.price) for line in lines])


def _basket(lines: bytes) -> frozenset[str]:
    return frozenset(line[0] for line in orjson.loads(lines))


_ORDER_COLUMNS = "id, placed_at_ms, currency, customer_id, visitor_id, status, lines, returned"


def _order(row: tuple[Any, ...]) -> Order:
    order_id, placed_at_ms, currency, customer_id, visitor_id, status, lines, returned = row
    return Order(
        id=order_id,
        placed_at_ms=placed_at_ms,
        currency=currency,
        lines=tuple(OrderLine(*line) for line in orjson.loads(lines)),
        customer_id=customer_id,
        visitor_id=visitor_id,
        status=cast(OrderStatus, status),
        returned=tuple(orjson.loads(returned)),
    )


def _store_record(row: tuple[Any, ...]) -> StoreRecord:
    store_id, name, pk, sk, webhook_secrets, signing_keys, rules, created_at_ms = row
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


def _adjacency(pairs: Iterable[tuple[str, str, int]]) -> dict[str, dict[str, int]]:
    """Undirected pair counts grouped under both products (a later repeat of a pair wins)."""
    partners: defaultdict[str, dict[str, int]] = defaultdict(dict)
    for a, b, n in pairs:
        if a != b:
            partners[a][b] = n
            partners[b][a] = n
    return partners


def _add_purchases(conn: sqlite3.Connection, store_id: str, orders: Sequence[Order]) -> None:
    """Fold the orders' products into each buyer's {product: last purchase ms}."""
    bought: defaultdict[str, dict[str, int]] = defaultdict(dict)
    for order in orders:
        for subject in _subjects(order.customer_id, order.visitor_id):
            last = bought[subject]
            for product_id in order.product_ids:
                if last.get(product_id, -1) < order.placed_at_ms:
                    last[product_id] = order.placed_at_ms
    if not bought:
        return
    for subject, products in conn.execute(
        f"SELECT subject, products FROM purchases WHERE store_id = ? AND subject {_IN_IDS}",
        (store_id, _ids(bought)),
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
    merged = [*orjson.loads(lines), (line.product_id, line.quantity, line.price)]
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
    basket = _basket(lines)
    conn.execute(
        "UPDATE orders SET returned = ?,"
        " status = CASE WHEN ? THEN 'returned' ELSE status END WHERE store_id = ? AND id = ?",
        (
            orjson.dumps(sorted(now_returned)),
            bool(basket) and basket <= now_returned,
            store_id,
            ret.order_id,
        ),
    )
    return _subjects(customer_id, visitor_id)


def _baskets_page(
    conn: sqlite3.Connection, store_id: str, after: str | None, limit: int
) -> tuple[str | None, list[frozenset[str]]]:
    """The baskets of up to `limit` orders after the order id `after`, and the next cursor."""
    # Every text sorts at or after '', so the first page is `>= ''`: a plain range keeps the
    # primary key doing the work where `? IS NULL OR id > ?` would scan from the start.
    op, low = (">=", "") if after is None else (">", after)
    rows = conn.execute(_BASKETS_PAGE.format(op=op), (store_id, low, limit)).fetchall()
    baskets = [basket for basket in (_basket(lines) for _, lines in rows) if basket]
    return (rows[-1][0] if len(rows) == limit else None), baskets


# The open store objects of this process, by file: a write through one ends the read
# snapshots of all (see SQLiteStore._snapshot).
_OPEN: dict[str, weakref.WeakSet[SQLiteStore]] = {}


class SQLiteStore(SQLiteCommerce, SQLiteJourneys, SQLiteKeys):
    """The `Store` protocol on one SQLite file.

    Two connections per object. Reads run on the event loop thread: they are short, and in
    WAL mode they never wait for a writer. Writes run one at a time in a worker thread on the
    writer connection, each in one `BEGIN IMMEDIATE` transaction, so a big import never
    blocks the loop and a read-then-write is atomic across processes sharing the file.
    """

    # Orders per round trip of `iter_baskets`.
    baskets_page_size = 2000

    @property
    def streams(self) -> None:
        """Events are counted as they are written: there is no stream to aggregate."""
        return None

    @property
    def shared_limits(self) -> None:
        """Rate limits are each process's own."""
        return None

    def __init__(self, path: str, *, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._reader: sqlite3.Connection | None = None
        self._writer: sqlite3.Connection | None = None
        self._snapshot_until = 0.0  # the shared read transaction's end (monotonic time)
        self._file = os.path.realpath(path) if path != ":memory:" else path
        self._write_lock = asyncio.Lock()
        self._checkpointer: sqlite3.Connection | None = None
        self._checkpoint: asyncio.Task[None] | None = None
        self._checkpointed_at = 0.0
        # A `:memory:` database belongs to one connection: there is only one, used inline.
        self._in_memory = path == ":memory:"
        self._event_ids = EventIds()

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        """`sqlite:///relative/path`, `sqlite:////absolute/path` or `sqlite:///:memory:`."""
        prefix = "sqlite:///"
        path = url[len(prefix) :].split("?", 1)[0]
        if not url.startswith(prefix) or not path:
            raise ValueError(f"expected sqlite:///<path>, got {url!r}")
        return cls(path)

    # lifecycle

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    async def open(self) -> None:
        """Create the file, its directory and the schema if missing; safe in every process."""
        if self._writer is not None:
            return
        with _wrapped("open the database"):
            if not self._in_memory:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            writer = self._connect()
            try:
                if not self._in_memory:
                    writer.execute("PRAGMA journal_mode = WAL")  # persists in the file
                writer.execute("PRAGMA cache_size = -65536")  # 64 MiB for bulk writes
                # A big import grows the WAL; truncate it after checkpoints, not keep it.
                writer.execute("PRAGMA journal_size_limit = 67108864")
                _migrate(writer)
                if self._in_memory:
                    reader = writer
                else:
                    reader = self._connect()
                    reader.execute("PRAGMA query_only = ON")
                    reader.execute(f"PRAGMA mmap_size = {READ_MAP_BYTES}")
                    writer.execute(f"PRAGMA wal_autocheckpoint = {WRITER_CHECKPOINT_PAGES}")
                    self._checkpointer = self._connect()
            except BaseException:
                writer.close()
                raise
        self._writer, self._reader = writer, reader
        self._event_ids = EventIds()  # read from the file again when first needed
        _OPEN.setdefault(self._file, weakref.WeakSet()).add(self)

    async def close(self) -> None:
        self._end_snapshot()
        reader, writer = self._reader, self._writer
        self._reader = self._writer = None
        _OPEN.get(self._file, weakref.WeakSet()).discard(self)
        if writer is None:
            return
        async with self._write_lock:  # let a write in flight finish
            checkpoint = self._checkpoint
            if checkpoint is not None:
                await checkpoint
            checkpointer, self._checkpointer = self._checkpointer, None
            with _wrapped("close the database"):
                if checkpointer is not None:
                    checkpointer.close()
                if reader is not None and reader is not writer:
                    reader.close()
                writer.close()

    async def ping(self) -> None:
        self._query("answer a ping", "SELECT 1")

    # plumbing

    def _query(self, action: str, sql: str, params: Any = ()) -> list[Any]:
        """A read, on the loop thread, in the current read snapshot (see `_snapshot`)."""
        reader = self._reader
        if reader is None:
            raise StoreError("SQLite store is not open")
        try:  # as _wrapped does, without a context manager per read
            if not self._in_memory:
                self._snapshot(reader)
            return reader.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store could not {action}: {exc}") from exc

    def _snapshot(self, reader: sqlite3.Connection) -> None:
        """Reads share one read transaction for up to SNAPSHOT_MAX_S.

        Starting a read transaction on a WAL file (a read mark, a file lock, the WAL index)
        costs more than a small indexed query, so consecutive reads reuse one. Every write made
        in this process, through any store object on the file, ends the shared snapshots
        before it is acknowledged (see `_on_writer`): this process reads its own writes at
        once, and another process's within SNAPSHOT_MAX_S.
        """
        now = time.monotonic()
        if now < self._snapshot_until and reader.in_transaction:
            return
        self._end_snapshot()
        reader.execute("BEGIN")
        self._snapshot_until = now + SNAPSHOT_MAX_S
        with suppress(RuntimeError):  # without a running loop, the next read or close ends it
            # Not left open on an idle process: it would hold back checkpoints.
            asyncio.get_running_loop().call_later(SNAPSHOT_MAX_S, self._end_stale_snapshot)

    def _end_snapshot(self) -> None:
        self._snapshot_until = 0.0
        reader = self._reader
        if reader is not None and reader.in_transaction:
            with suppress(sqlite3.Error):
                reader.execute("COMMIT")

    def _end_stale_snapshot(self) -> None:
        if time.monotonic() >= self._snapshot_until:
            self._end_snapshot()

    async def _write(self, action: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in one `BEGIN IMMEDIATE` transaction on the writer, off the loop."""
        return await self._on_writer(action, partial(in_transaction, fn))

    async def _on_writer(self, action: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` with the writer connection in a worker thread, one call at a time."""
        async with self._write_lock:
            writer = self._writer
            if writer is None:
                raise StoreError("SQLite store is not open")
            with _wrapped(action):
                if self._in_memory:
                    return fn(writer)
                try:
                    return await asyncio.to_thread(fn, writer)
                finally:
                    # Before the caller goes on: later reads here must see this write.
                    for store in list(_OPEN.get(self._file, ())):
                        store._end_snapshot()
                    self._start_checkpoint()

    def _start_checkpoint(self) -> None:
        """A passive checkpoint in the background, unless one ran within CHECKPOINT_INTERVAL_S."""
        now = time.monotonic()
        if self._checkpoint is not None or now - self._checkpointed_at < CHECKPOINT_INTERVAL_S:
            return
        checkpointer = self._checkpointer
        if checkpointer is None:
            return
        self._checkpointed_at = now
        task = asyncio.get_running_loop().create_task(self._run_checkpoint(checkpointer))
        self._checkpoint = task

    async def _run_checkpoint(self, checkpointer: sqlite3.Connection) -> None:
        try:
            await asyncio.to_thread(_passive_checkpoint, checkpointer)
        except sqlite3.Error:
            pass  # the next one, or the writer's own, copies what this one left
        finally:
            self._checkpoint = None

    async def _off_loop(self, fn: Callable[[], T]) -> T:
        """CPU-heavy preparation of a big write, before it takes the write lock."""
        return fn() if self._in_memory else await asyncio.to_thread(fn)

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
            orjson.dumps(record.webhook_secrets).decode(),
            orjson.dumps(
                [{"kid": key.kid, "secret": key.secret.hex()} for key in record.signing_keys]
            ).decode(),
            record.rules.model_dump_json(),
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
        """Insert or replace products by id (a later duplicate in `products` wins)."""
        rows = [(store_id, p.id, p.family, p.category, orjson.dumps(p)) for p in products]

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
            f"SELECT id, data FROM products WHERE store_id = ? AND id {_IN_IDS}",
            (store_id, _ids(ids)),
        )
        return {product_id: _load_product(data) for product_id, data in rows}

    async def list_products(
        self, store_id: str, limit: int, after: str | None = None
    ) -> list[Product]:
        op, low = (">=", "") if after is None else (">", after)
        rows = self._query(
            "list products",
            f"SELECT data FROM products WHERE store_id = ? AND id {op} ? ORDER BY id LIMIT ?",
            (store_id, low, limit),
        )
        return [_load_product(data) for (data,) in rows]

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

    # orders and returns

    async def add_orders(self, store_id: str, orders: Sequence[Order]) -> ImportCounts:
        def add(conn: sqlite3.Connection) -> ImportCounts:
            _require_store(conn, store_id)
            seen = {
                order_id
                for (order_id,) in conn.execute(
                    f"SELECT id FROM orders WHERE store_id = ? AND id {_IN_IDS}",
                    (store_id, _ids(o.id for o in orders)),
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
            _require_store(conn, store_id)
            recorded = 0
            rows: list[tuple[str, str, str, int]] = []
            for ret in returns:
                subjects = _subjects(ret.customer_id, None)
                buyers = None if ret.order_id is None else _return_from_order(conn, store_id, ret)
                if buyers is None and not subjects:
                    continue
                recorded += 1
                subjects.extend(buyers or ())
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
        """Baskets per product; products in no basket are left out."""
        if not ids:
            return {}
        rows = self._query(
            "read basket counts",
            f"SELECT product_id, baskets FROM product_stats WHERE store_id = ? AND product_id"
            f" {_IN_IDS}",
            (store_id, _ids(ids)),
        )
        return {product_id: n for product_id, n in rows}

    async def add_pair_counts(
        self, store_id: str, increments: Mapping[tuple[str, str], int]
    ) -> None:
        added: defaultdict[str, Counter[str]] = defaultdict(Counter)
        for (a, b), n in increments.items():
            if a != b:
                added[a][b] += n
                added[b][a] += n

        def add(conn: sqlite3.Connection) -> None:
            _require_store(conn, store_id)
            if not added:
                return
            merged: dict[str, Counter[str]] = dict(added)
            for product_id, partners in conn.execute(
                f"SELECT product_id, partners FROM pair_counts WHERE store_id = ?"
                f" AND product_id {_IN_IDS}",
                (store_id, _ids(added)),
            ):
                current: Counter[str] = Counter(orjson.loads(partners))
                current.update(added[product_id])
                merged[product_id] = current
            conn.executemany(
                "INSERT OR REPLACE INTO pair_counts (store_id, product_id, partners)"
                " VALUES (?, ?, ?)",
                [
                    (store_id, product_id, orjson.dumps({q: n for q, n in c.items() if n > 0}))
                    for product_id, c in merged.items()
                ],
            )
            _bump_version(conn, store_id)

        await self._write("add pair counts", add)

    async def replace_pair_counts(
        self, store_id: str, pairs: Iterable[tuple[str, str, int]]
    ) -> None:
        partners = await self._off_loop(lambda: _adjacency(pairs))
        rows = ((store_id, product_id, orjson.dumps(p)) for product_id, p in partners.items())

        def replace(conn: sqlite3.Connection) -> None:
            _require_store(conn, store_id)
            conn.execute("DELETE FROM pair_counts WHERE store_id = ?", (store_id,))
            conn.executemany(
                "INSERT INTO pair_counts (store_id, product_id, partners) VALUES (?, ?, ?)", rows
            )
            _bump_version(conn, store_id)

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
        partners: dict[str, int] = orjson.loads(rows[0][0])
        ranked = sorted(partners.items(), key=lambda item: (-item[1], item[0]))
        return [PairCount(product_id=q, pair_count=n) for q, n in ranked]

    async def set_neighbors(self, store_id: str, lists: Mapping[str, Sequence[PairCount]]) -> None:
        rows = [
            (store_id, product_id, orjson.dumps([(pc.product_id, pc.pair_count) for pc in ranked]))
            for product_id, ranked in lists.items()
        ]

        def replace(conn: sqlite3.Connection) -> None:
            _require_store(conn, store_id)
            if rows:
                conn.executemany(
                    "INSERT OR REPLACE INTO neighbors (store_id, product_id, ranked)"
                    " VALUES (?, ?, ?)",
                    rows,
                )
                _bump_version(conn, store_id)

        await self._write("set neighbours", replace)

    async def neighbors(self, store_id: str, product_id: str, limit: int) -> list[PairCount]:
        rows = self._query(
            "read neighbours",
            "SELECT ranked FROM neighbors WHERE store_id = ? AND product_id = ?",
            (store_id, product_id),
        )
        if not rows or limit < 1:
            return []
        ranked = orjson.loads(rows[0][0])[:limit]
        return [PairCount(product_id=q, pair_count=n) for q, n in ranked]

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
                "customer": _customer_subject(customer_id) if customer_id else None,
                "visitor": _visitor_subject(visitor_id) if visitor_id else None,
                "visitor_id": visitor_id,
                "since": since_ms,
            },
        )
        purchased: dict[str, int] = {}
        sets: dict[str, set[str]] = {"return": set(), "decline": set(), "accept": set()}
        # Impressions in the window count until the visitor clicks that product (one plain
        # index range read; counted here rather than with a correlated subquery per product).
        shown: list[tuple[str, int]] = []
        clicked: dict[str, int] = {}
        for kind, key, value in rows:
            if kind == "purchases":
                for product_id, ms in orjson.loads(value).items():
                    if purchased.get(product_id, -1) < ms:
                        purchased[product_id] = ms
            elif kind == "impression":
                shown.append((key, value))
            elif kind == "click":
                if clicked.get(key, -1) < value:
                    clicked[key] = value
            else:
                sets[kind].add(key)
        impressions: dict[str, int] = {}
        for key, at_ms in shown:
            if at_ms > clicked.get(key, -1):
                impressions[key] = impressions.get(key, 0) + 1
        return VisitorState(
            purchased=purchased,
            returned=frozenset(sets["return"]),
            declined=frozenset(sets["decline"]),
            accepted=frozenset(sets["accept"]),
            impressions=impressions,
        )

    async def visitor_changes(self, store_id: str, after: str | None) -> VisitorChanges:
        # Signals are only ever added, one writer at a time: rowids grow in commit order.
        ((last,),) = self._query("read the signals' end", "SELECT MAX(rowid) FROM visitor_signals")
        top = last or 0
        if after is None:
            return VisitorChanges(str(top))
        since = int(after)
        if top - since > VISITOR_CHANGES_MAX or top < since:
            return VisitorChanges(str(top), None)  # too many to list, or another file
        rows = self._query(
            "read visitor changes",
            "SELECT DISTINCT visitor_id FROM visitor_signals"
            " WHERE rowid > ? AND rowid <= ? AND store_id = ?",
            (since, top, store_id),
        )
        return VisitorChanges(str(top), frozenset(v for (v,) in rows))

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


def _migrate(conn: sqlite3.Connection) -> None:
    if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
        return  # the common case: opening takes no write lock
    conn.execute("BEGIN IMMEDIATE")
    try:
        (found,) = conn.execute("PRAGMA user_version").fetchone()
        if found > SCHEMA_VERSION:
            raise StoreError(
                f"the database has schema version {found}; this release knows {SCHEMA_VERSION}"
            )
        if found == SCHEMA_VERSION:  # another process migrated it while this one waited
            conn.execute("COMMIT")
            return
        schemas = (_SCHEMA, COMMERCE_SCHEMA, JOURNEY_SCHEMA, KEYS_SCHEMA)
        for statement in ";".join(schemas).split(";"):
            if statement.strip():
                conn.execute(statement)
        upgrade_commerce(conn, found)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _passive_checkpoint(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


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
                _dump_lines(o.lines),
            )
            for o in orders
        ],
    )
    _add_purchases(conn, store_id, orders)
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
