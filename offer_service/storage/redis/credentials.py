"""Redis: a store's credentials rotated: API keys (with a grace period), secrets, signing keys."""

from __future__ import annotations

import orjson

from offer_service.domain.records import KeyKind, SigningKey, StoreRecord
from offer_service.exceptions import StoreError
from offer_service.storage.codec import signing_key_json
from offer_service.storage.redis import keys
from offer_service.storage.redis.client import text
from offer_service.storage.redis.keys import StoreKeys
from offer_service.storage.redis.scripts.credentials import (
    ROTATE_API_KEY,
    ROTATE_SIGNING_KEY,
    ROTATE_WEBHOOK_SECRET,
)
from offer_service.storage.redis.tenants import RedisTenants


class RedisCredentials(RedisTenants):
    """The rotations of the TenantStore part of the Store protocol."""

    async def rotate_signing_key(self, store_id: str, new_key: SigningKey) -> StoreRecord:
        await self._script(
            "rotate the signing key",
            ROTATE_SIGNING_KEY,
            [StoreKeys(store_id).record],
            [orjson.dumps(signing_key_json(new_key)).decode()],
        )
        record = await self.get_store(store_id)
        if record is None:
            raise StoreError(f"unknown store {store_id!r}")
        return record

    async def rotate_webhook_secret(
        self, store_id: str, new_secret: str, *, keep_previous: bool = True
    ) -> StoreRecord:
        await self._script(
            "rotate the webhook secret",
            ROTATE_WEBHOOK_SECRET,
            [StoreKeys(store_id).record],
            [new_secret, "1" if keep_previous else "0"],
        )
        record = await self.get_store(store_id)
        if record is None:
            raise StoreError(f"unknown store {store_id!r}")
        return record

    async def rotate_api_key(
        self, store_id: str, kind: KeyKind, new_key: str, *, grace_ms: int, now_ms: int
    ) -> StoreRecord:
        # The key index is global (outside the store's slot): claim the new key first, so it
        # can never belong to two stores, then switch the record in one script.
        index = keys.key_index(new_key)
        if not await self._do("claim a key", "set", index, store_id, nx=True):
            raise StoreError("the new key is already a key of a store")
        field = "pk" if kind == "publishable" else "sk"
        until = now_ms + max(grace_ms, 0)
        try:
            reply = await self._script(
                f"rotate the {kind} key",
                ROTATE_API_KEY,
                [StoreKeys(store_id).record],
                [field, new_key, kind, str(until), str(now_ms)],
            )
        except BaseException:
            await self._do("release a key", "delete", index)
            raise
        # The record decides whether a retired key is valid; its index entry is only cleaned up.
        for old, at in zip(reply[::2], reply[1::2], strict=True):
            old_index = keys.key_index(text(old))
            if int(at) <= now_ms:
                await self._do("retire a key", "delete", old_index)
            else:
                await self._do("retire a key", "pexpireat", old_index, int(at))
        record = await self.get_store(store_id)
        if record is None:
            raise StoreError(f"unknown store {store_id!r}")
        return record
