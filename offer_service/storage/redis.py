"""The shared backend: Redis or Redis Cluster, for many service processes on many machines.

`redis://[user:password@]host:port[/db]` or `redis+cluster://host:port` (any node of the
cluster). Optional query parameters set the timeouts, in ms (defaults in `redis_client.py`):
`read_timeout_ms`, `write_timeout_ms`, `connect_timeout_ms`, `accept_timeout_ms`,
`events_timeout_ms`. Key names and TTLs are in `keys.py`, the atomic check-and-writes in
`redis_scripts.py`, the clients and their error handling in `redis_client.py`, events in
`redis_events.py`, idempotency and accepts in `redis_commerce.py`.

Data is kept in the shape it is read, as in the SQLite backend: a product, an order, a
product's co-purchase counts or its neighbour list is one hash field; a shopper's purchases one
hash. Every key of a store carries the store's hash tag, so a store lives in one cluster slot
and more shards hold more stores. Writes that change what offers look like bump the store's
`version` field, which every service process checks at least once a second.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from typing import Any

import orjson

from ..catalog import Product
from ..exceptions import StoreError
from ..orders import Order, OrderLine, ProductReturn
from ..policy import StoreRules
from ..types import now_ms
from . import keys
from .base import (
    EMPTY_VISITOR,
    ImportCounts,
    PairCount,
    SignalKind,
    SigningKey,
    StoreRecord,
    VisitorState,
)
from .keys import GROUP, StoreKeys
from .redis_client import Client, chunks, sha1, subjects
from .redis_commerce import CAS_ATTEMPTS, RedisCommerce
from .redis_scripts import (
    ADD_ORDERS,
    ADD_RETURNS,
    CREATE_STORE,
    READ_PAIRS,
    RECORD_SIGNAL,
    SET_NEIGHBORS,
    SET_RULES,
    SWAP_PAIRS,
    UPDATE_PAIRS,
    UPSERT_PRODUCTS,
)

# Sizes of one script call or one command: big enough to amortise the round trip, small enough
# that Redis (single-threaded) never stalls other clients for long.
PRODUCTS_PER_SCRIPT = 500
ORDER_LINES_PER_SCRIPT = 5000
RETURNS_PER_SCRIPT = 500
NEIGHBORS_PER_SCRIPT = 500
PAIR_BYTES_PER_COMMAND = 4 * 1024 * 1024
SCAN_COUNT = 1000


def _product(data: bytes) -> Product:
    fields: dict[str, Any] = orjson.loads(data)
    for name in ("tags", "complements", "flags"):
        fields[name] = tuple(fields[name])
    return Product(**fields)


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


def _record(store_id: str, h: Mapping[bytes, bytes]) -> StoreRecord:
    secrets_ = [h[b"whsec0"].decode()]
    if b"whsec1" in h:
        secrets_.append(h[b"whsec1"].decode())
    return StoreRecord(
        id=store_id,
        name=h[b"name"].decode(),
        publishable_key=h[b"pk"].decode(),
        secret_key=h[b"sk"].decode(),
        webhook_secrets=tuple(secrets_),
        signing_keys=tuple(
            SigningKey(kid=key["kid"], secret=bytes.fromhex(key["secret"]))
            for key in orjson.loads(h[b"signing"])
        ),
        rules=StoreRules.model_validate_json(h[b"rules"]),
        created_at_ms=int(h[b"created"]),
    )


def _adjacency(pairs: Iterable[tuple[str, str, int]]) -> dict[str, dict[str, int]]:
    """Undirected pair counts grouped under both products (a later repeat of a pair wins)."""
    partners: defaultdict[str, dict[str, int]] = defaultdict(dict)
    for a, b, n in pairs:
        if a != b:
            partners[a][b] = n
            partners[b][a] = n
    return partners


def _flat(rows: Iterable[Sequence[Any]]) -> list[Any]:
    return [value for row in rows for value in row]


class RedisStore(RedisCommerce):
    """The `Store` protocol on Redis or Redis Cluster."""

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
        return cls(url)

    # tenants

    async def _require_store(self, k: StoreKeys, store_id: str) -> None:
        if not await self._write("check a store", lambda c: c.exists(k.record)):
            raise StoreError(f"unknown store {store_id!r}")

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
        if "{" in record.id or "}" in record.id:
            raise StoreError("a store id cannot contain braces (they delimit its hash tag)")
        if record.publishable_key == record.secret_key:
            raise StoreError("the publishable and secret keys must differ")
        k = StoreKeys(record.id)
        fields = {
            "name": record.name,
            "pk": record.publishable_key,
            "sk": record.secret_key,
            "whsec0": record.webhook_secret,
            "signing": orjson.dumps(
                [{"kid": key.kid, "secret": key.secret.hex()} for key in record.signing_keys]
            ),
            "rules": record.rules.model_dump_json(),
            "created": str(record.created_at_ms),
            "version": "1",
            "baskets": "0",
            "pairs_gen": "0",
            "pairs_next": "0",
        }
        created = await self._script(
            "create a store", CREATE_STORE, [k.record, k.events], [GROUP, *_flat(fields.items())]
        )
        if not created:
            raise StoreError(f"the id of store {record.id!r} is already taken")
        claimed: list[str] = []
        try:
            # A key must not be either key of another store: both kinds share one index.
            for api_key in (record.publishable_key, record.secret_key):
                index = keys.key_index(api_key)
                ok = await self._do("claim a key", "set", index, record.id, nx=True)
                if not ok:
                    raise StoreError(f"a key of store {record.id!r} is already taken")
                claimed.append(index)
            await self._write("register a store", lambda c: c.sadd(keys.STORES, record.id))
        except BaseException:
            for index in claimed:
                await self._do("release a key", "delete", index)
            await self._write("forget a store", lambda c: c.delete(k.record, k.events))
            raise
        return record

    async def get_store(self, store_id: str) -> StoreRecord | None:
        k = StoreKeys(store_id)
        h = await self._read("read a store", lambda c: c.hgetall(k.record))
        return _record(store_id, h) if h else None

    async def store_by_key(self, key: str) -> StoreRecord | None:
        store_id = await self._read("resolve a key", lambda c: c.get(keys.key_index(key)))
        if store_id is None:
            return None
        record = await self.get_store(store_id.decode())
        # An index entry left by a creation that failed halfway points at nothing of its own.
        if record is None or key not in (record.publishable_key, record.secret_key):
            return None
        return record

    async def set_rules(self, store_id: str, rules: StoreRules) -> StoreRecord:
        k = StoreKeys(store_id)
        reply = await self._script("set rules", SET_RULES, [k.record], [rules.model_dump_json()])
        if not reply:
            raise StoreError(f"unknown store {store_id!r}")
        return _record(store_id, dict(zip(reply[::2], reply[1::2], strict=True)))

    async def version(self, store_id: str) -> int:
        k = StoreKeys(store_id)
        value = await self._read("read a version", lambda c: c.hget(k.record, "version"))
        return int(value) if value is not None else 0

    # catalog

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
                orjson.dumps(p),
            )
            for p in products
        ]
        for batch in chunks(rows, PRODUCTS_PER_SCRIPT):
            await self._script(
                "upsert products", UPSERT_PRODUCTS, [k.record], [k.prefix, *_flat(batch)]
            )
        return len(rows)

    async def get_products(self, store_id: str, ids: Collection[str]) -> dict[str, Product]:
        if not ids:
            return {}
        wanted = list(ids)
        k = StoreKeys(store_id)
        values = await self._read("read products", lambda c: c.hmget(k.products, wanted))
        return {pid: _product(v) for pid, v in zip(wanted, values, strict=True) if v is not None}

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
        return [_product(v) for v in values if v is not None]

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
            args += _flat(rows)
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
                "set neighbours", SET_NEIGHBORS, [k.record], [k.prefix, *_flat(batch)]
            )

    async def neighbors(self, store_id: str, product_id: str, limit: int) -> list[PairCount]:
        k = StoreKeys(store_id)
        data = await self._read("read neighbours", lambda c: c.hget(k.neighbors, product_id))
        if data is None or limit < 1:
            return []
        return [PairCount(product_id=q, pair_count=n) for q, n in orjson.loads(data)[:limit]]

    # per-visitor state

    async def visitor_state(
        self, store_id: str, visitor_id: str | None, customer_id: str | None, since_ms: int
    ) -> VisitorState:
        if not visitor_id and not customer_id:
            return EMPTY_VISITOR
        k = StoreKeys(store_id)
        names = subjects(customer_id, visitor_id)

        async def read(c: Client) -> list[Any]:
            pipe = c.pipeline(transaction=False)
            for name in names:
                pipe.hgetall(k.bought(name))
            for name in names:
                pipe.hkeys(k.returned(name))
            if visitor_id:
                pipe.smembers(k.declined(visitor_id))
                pipe.smembers(k.accepted(visitor_id))
                pipe.zrangebyscore(k.impressions(visitor_id), since_ms, "+inf", withscores=True)
                pipe.hgetall(k.clicks(visitor_id))
            result: list[Any] = await pipe.execute()
            return result

        # One round trip: a pipeline of reads, all in the store's slot.
        replies = await self._read("read visitor state", read)
        purchased: dict[str, int] = {}
        for bought in replies[: len(names)]:
            for product_id, ms in bought.items():
                pid, at = product_id.decode(), int(ms)
                if purchased.get(pid, -1) < at:
                    purchased[pid] = at
        returned = {pid.decode() for ids in replies[len(names) : 2 * len(names)] for pid in ids}
        declined: set[str] = set()
        accepted: set[str] = set()
        impressions: Counter[str] = Counter()
        if visitor_id:
            declines, accepts, shown, clicks = replies[2 * len(names) :]
            declined = {pid.decode() for pid in declines}
            accepted = {pid.decode() for pid in accepts}
            last_click = {pid.decode(): int(ms) for pid, ms in clicks.items()}
            for member, at in shown:
                pid = member.rsplit(b"\x1f", 1)[0].decode()
                if at > last_click.get(pid, -1):
                    impressions[pid] += 1
        return VisitorState(
            purchased=purchased,
            returned=frozenset(returned),
            declined=frozenset(declined),
            accepted=frozenset(accepted),
            impressions=dict(impressions),
        )

    async def record_visitor_signal(
        self, store_id: str, visitor_id: str, product_id: str, kind: SignalKind, at_ms: int
    ) -> None:
        k = StoreKeys(store_id)
        await self._script(
            "record a visitor signal",
            RECORD_SIGNAL,
            [k.declined(visitor_id)],
            [
                k.prefix,
                visitor_id,
                kind,
                product_id,
                str(at_ms),
                secrets.token_hex(8),
                str(keys.IMPRESSION_WINDOW_MS),
                str(keys.VISITOR_TTL_S),
            ],
        )
