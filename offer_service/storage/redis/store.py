"""The shared backend: Redis or Redis Cluster, for many service processes on many machines.

`redis://[user:password@]host:port[/db]` or `redis+cluster://host:port` (any node of the
cluster). Optional query parameters set the timeouts, in ms (defaults in `redis_client.py`):
`read_timeout_ms`, `write_timeout_ms`, `connect_timeout_ms`, `accept_timeout_ms`,
`events_timeout_ms`; `event_log_days` bounds the raw events kept in memory. Key names and
TTLs are in `keys.py`, the atomic check-and-writes in `redis_scripts.py`, the clients and
their error handling in `redis_client.py`, events in `redis_events.py`, idempotency and
accepts in `redis_commerce.py`, orders and affinity in `redis_orders.py`, post-purchase
journeys in `redis_journeys.py`.

Data is kept in the shape it is read, as in the SQLite backend: a product, an order, a
product's co-purchase counts or its neighbour list is one hash field; a shopper's purchases one
hash. Every key of a store carries the store's hash tag, so a store lives in one cluster slot
and more shards hold more stores. Writes that change what offers look like bump the store's
`version` field, which every service process checks at least once a second.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import orjson

from offer_service.domain.policy import StoreRules
from offer_service.domain.products import Product
from offer_service.domain.records import (
    EMPTY_VISITOR,
    RetiredKey,
    SignalKind,
    SigningKey,
    StoreRecord,
    VisitorChanges,
    VisitorState,
)
from offer_service.exceptions import StoreError
from offer_service.storage.protocols import VISITOR_CHANGES_MAX
from offer_service.storage.redis import keys
from offer_service.storage.redis.client import chunks, flat, run_script, subjects
from offer_service.storage.redis.journeys import RedisJourneys
from offer_service.storage.redis.keys import GROUP, StoreKeys
from offer_service.storage.redis.orders import RedisOrders
from offer_service.storage.redis.scripts import (
    CREATE_STORE,
    RATE_LIMIT,
    RECORD_SIGNAL,
    SET_RULES,
    UPSERT_PRODUCTS,
    VISITOR_STATE,
)
from offer_service.types import now_ms

# Sizes of one script call or one command: big enough to amortise the round trip, small enough
# that Redis (single-threaded) never stalls other clients for long.
PRODUCTS_PER_SCRIPT = 500


def _product(data: bytes) -> Product:
    fields: dict[str, Any] = orjson.loads(data)
    for name in ("tags", "complements", "flags"):
        fields[name] = tuple(fields[name])
    return Product(**fields)


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
        retired_keys=tuple(
            RetiredKey(key, kind, int(expires))
            for key, kind, expires in orjson.loads(h.get(b"retired", b"[]"))
        ),
    )


class RedisStore(RedisOrders, RedisJourneys):
    """The `Store` protocol on Redis or Redis Cluster."""

    @property
    def streams(self) -> RedisStore:
        """Events go through a stream per store, counted by aggregators."""
        return self

    @property
    def shared_limits(self) -> RedisStore:
        """Rate limits are kept in Redis for every instance."""
        return self

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
        return cls(url)

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
            "create a store", CREATE_STORE, [k.record, k.events], [GROUP, *flat(fields.items())]
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
        # An index entry left by a creation that failed halfway points at nothing of its own;
        # one of a retired key outlives its grace period by a moment.
        if record is None or record.key_kind(key, now_ms()) is None:
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
                "upsert products", UPSERT_PRODUCTS, [k.record], [k.prefix, *flat(batch)]
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

    # per-visitor state

    async def visitor_changes(self, store_id: str, after: str | None) -> VisitorChanges | None:
        key = StoreKeys(store_id).visitor_changes
        if after is None:
            last = await self._read("read visitor changes", lambda c: c.xrevrange(key, count=1))
            return VisitorChanges(last[0][0].decode() if last else "0-0")
        # One more than is listed: more than that, and every visitor may have changed.
        rows = await self._read(
            "read visitor changes",
            lambda c: c.xrange(key, min="(" + after, count=VISITOR_CHANGES_MAX + 1),
        )
        if not rows:
            return VisitorChanges(after)
        cursor = rows[-1][0].decode()
        if len(rows) > VISITOR_CHANGES_MAX:
            return VisitorChanges(cursor, None)
        return VisitorChanges(cursor, frozenset(fields[b"v"].decode() for _, fields in rows))

    async def visitor_state(
        self, store_id: str, visitor_id: str | None, customer_id: str | None, since_ms: int
    ) -> VisitorState:
        if not visitor_id and not customer_id:
            return EMPTY_VISITOR
        k = StoreKeys(store_id)
        names = subjects(customer_id, visitor_id)
        state_keys = [k.bought(name) for name in names] + [k.returned(name) for name in names]
        if visitor_id:
            state_keys += [
                k.declined(visitor_id),
                k.accepted(visitor_id),
                k.impressions(visitor_id),
                k.clicks(visitor_id),
            ]
        # One round trip and one reply: the script reads every key (all in the store's slot)
        # and counts the impressions that fall under the frequency cap.
        purchases, returned, declined, accepted, shown = await self._read(
            "read visitor state",
            lambda c: run_script(c, VISITOR_STATE, state_keys, [len(names), since_ms]),
        )
        return VisitorState(
            purchased={
                purchases[i].decode(): int(purchases[i + 1]) for i in range(0, len(purchases), 2)
            },
            returned=frozenset(pid.decode() for pid in returned),
            declined=frozenset(pid.decode() for pid in declined),
            accepted=frozenset(pid.decode() for pid in accepted),
            impressions={shown[i].decode(): int(shown[i + 1]) for i in range(0, len(shown), 2)},
        )

    async def rate_lease(
        self, store_id: str, bucket: str, per_second: float, burst: int, want: int
    ) -> tuple[int, float]:
        """GCRA shared by every instance, counting up to `want` requests at once: (how many were
        counted, 0.0), at least one, or (0, the seconds to wait) when not even one is allowed.
        One script, one round trip, on the fail-fast client (a slow or absent Redis raises
        StoreUnavailable at once, and the caller counts the request in its own process)."""
        interval = max(1, round(1_000_000 / per_second))
        tolerance = interval * max(burst - 1, 0)
        key = StoreKeys(store_id).rate(bucket)
        granted, wait_us = await self._call(
            "check a rate limit",
            lambda c: run_script(c, RATE_LIMIT, [key], [interval, tolerance, max(1, want)]),
            fast=True,
            breaker=True,
        )
        return int(granted), int(wait_us) / 1_000_000

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
