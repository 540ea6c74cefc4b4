"""Redis: post-purchase journeys: lifecycle events, SMS consent, feed keys, tracked short links.

Lifecycle events and consent changes are members of a set per order or customer (a
redelivered webhook adds nothing). Feed keys and link codes arrive in URLs that name no store,
so each has a global index key, like API keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import orjson

from offer_service.domain.lifecycle import (
    ConsentStatus,
    OrderEvent,
    OrderEventType,
    ShortLink,
    SmsConsent,
)
from offer_service.exceptions import StoreError
from offer_service.storage.codec import dump_short_link, load_short_link
from offer_service.storage.redis import keys
from offer_service.storage.redis.client import RedisBase
from offer_service.storage.redis.keys import StoreKeys
from offer_service.storage.redis.scripts.journeys import ROTATE_FEED_KEY


class RedisJourneys(RedisBase):
    """The journey parts of the Store protocol."""

    async def add_order_event(self, store_id: str, event: OrderEvent) -> bool:
        key = StoreKeys(store_id).order_events(event.order_id)
        member = [event.type, event.at_ms, sorted(set(event.product_ids))]
        return await self._add_once("record an order event", store_id, key, member)

    async def order_events(self, store_id: str, order_id: str) -> list[OrderEvent]:
        rows = await self._members("read order events", StoreKeys(store_id).order_events(order_id))
        events = [
            OrderEvent(order_id, cast(OrderEventType, kind), at, tuple(ids))
            for kind, at, ids in rows
        ]
        return sorted(events, key=lambda e: (e.at_ms, e.type, e.product_ids))

    async def add_sms_consent(self, store_id: str, consent: SmsConsent) -> bool:
        key = StoreKeys(store_id).sms_consent(consent.customer_id)
        member = [consent.at_ms, consent.status, consent.source]
        return await self._add_once("record SMS consent", store_id, key, member)

    async def sms_consents(self, store_id: str, customer_id: str) -> list[SmsConsent]:
        rows = await self._members("read SMS consent", StoreKeys(store_id).sms_consent(customer_id))
        return [
            SmsConsent(customer_id, cast(ConsentStatus, status), at, source)
            for at, status, source in sorted(rows)
        ]

    async def _add_once(self, action: str, store_id: str, key: str, member: list[Any]) -> bool:
        """Adds `member` (as JSON) to a set of a known store; False when it was there already."""
        await self._require_store(StoreKeys(store_id), store_id)
        return bool(await self._do(action, "sadd", key, orjson.dumps(member)))

    async def _members(self, action: str, key: str) -> list[Any]:
        members = await self._read(action, lambda c: c.smembers(key))
        return [orjson.loads(m) for m in members]

    async def rotate_feed_key(self, store_id: str, new_key: str) -> tuple[str, ...]:
        k = StoreKeys(store_id)
        await self._require_store(k, store_id)
        index = keys.feed_key_index(new_key)
        if not await self._do("claim a feed key", "set", index, store_id, nx=True):
            raise StoreError("the new feed key is already taken")
        dropped = await self._script(
            "rotate the feed key", ROTATE_FEED_KEY, [k.feed_keys], [new_key]
        )
        for old in dropped:
            await self._do("retire a feed key", "delete", keys.feed_key_index(old.decode()))
        return await self.feed_keys(store_id)

    async def feed_keys(self, store_id: str) -> tuple[str, ...]:
        k = StoreKeys(store_id)
        values = await self._write("read feed keys", lambda c: c.lrange(k.feed_keys, 0, 1))
        return tuple(v.decode() for v in values)

    async def store_by_feed_key(self, feed_key: str) -> str | None:
        value = await self._read(
            "resolve a feed key", lambda c: c.get(keys.feed_key_index(feed_key))
        )
        return None if value is None else value.decode()

    async def put_short_links(self, store_id: str, links: Sequence[ShortLink]) -> None:
        # Codes of one store spread over every slot: one command each (a feed has a handful).
        for link in links:
            await self._do(
                "store a short link",
                "set",
                keys.short_link(link.code),
                dump_short_link(link),
                nx=True,
                ex=keys.SHORT_LINK_TTL_S,
            )

    async def short_link(self, code: str) -> ShortLink | None:
        value = await self._read("resolve a short link", lambda c: c.get(keys.short_link(code)))
        return None if value is None else load_short_link(value)
