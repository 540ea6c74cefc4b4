"""Redis: stores (tenants), their record hash, the global index of API keys, rules, version."""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from offer_service.domain.policy import StoreRules
from offer_service.domain.records import RetiredKey, StoreRecord
from offer_service.exceptions import StoreError
from offer_service.storage.codec import dump_rules, dump_signing_keys, load_rules, load_signing_keys
from offer_service.storage.redis import keys
from offer_service.storage.redis.client import RedisBase, flat
from offer_service.storage.redis.keys import GROUP, StoreKeys
from offer_service.storage.redis.scripts.tenants import CREATE_STORE, SET_RULES
from offer_service.storage.tenants import new_store_record
from offer_service.types import now_ms


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
        signing_keys=load_signing_keys(h[b"signing"]),
        rules=load_rules(h[b"rules"]),
        created_at_ms=int(h[b"created"]),
        retired_keys=tuple(
            RetiredKey(key, kind, int(expires))
            for key, kind, expires in orjson.loads(h.get(b"retired", b"[]"))
        ),
    )


class RedisTenants(RedisBase):
    """The TenantStore part of the Store protocol, but for the rotations."""

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
        record = new_store_record(
            name,
            store_id=store_id,
            publishable_key=publishable_key,
            secret_key=secret_key,
            webhook_secret=webhook_secret,
            rules=rules,
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
            "signing": dump_signing_keys(record.signing_keys),
            "rules": dump_rules(record.rules),
            "created": str(record.created_at_ms),
            "version": "1",
            "baskets": "0",
            "pairs_gen": "0",
            "pairs_next": "0",
            "vlisted": "1",
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
        reply = await self._script("set rules", SET_RULES, [k.record], [dump_rules(rules)])
        if not reply:
            raise StoreError(f"unknown store {store_id!r}")
        return _record(store_id, dict(zip(reply[::2], reply[1::2], strict=True)))

    async def version(self, store_id: str) -> int:
        k = StoreKeys(store_id)
        value = await self._read("read a version", lambda c: c.hget(k.record, "version"))
        return int(value) if value is not None else 0
