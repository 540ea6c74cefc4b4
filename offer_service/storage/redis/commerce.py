"""Redis keys where money moves: idempotency claims, accept reservations, charged accepts.

Each check-and-write is one Lua script, so two service processes racing on one Idempotency-Key
or one offer see exactly one winner. Semantics follow `sqlite_commerce.py`, with one deliberate
difference: a claim by the owner that already holds it answers `claimed` again, so a call the
client retried after a dropped connection does not lock its own request out. Owners are random
per request, so no other request can ever present the same one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from offer_service.domain.orders import AcceptedOffer, OrderLine
from offer_service.domain.records import (
    IdempotencyClaim,
    KeyKind,
    Reservation,
    SigningKey,
    StoreRecord,
)
from offer_service.exceptions import StoreError
from offer_service.storage.redis import keys
from offer_service.storage.redis.client import hex_id, sha1, subjects
from offer_service.storage.redis.events import RedisEvents
from offer_service.storage.redis.keys import StoreKeys
from offer_service.storage.redis.scripts import (
    CANCEL_ACCEPT,
    CLAIM_IDEMPOTENCY,
    COMPLETE_ACCEPT,
    COMPLETE_IDEMPOTENCY,
    RELEASE_IDEMPOTENCY,
    RESERVE_ACCEPT,
    ROTATE_API_KEY,
    ROTATE_SIGNING_KEY,
    ROTATE_WEBHOOK_SECRET,
)

# Compare-and-set retries before a write gives up (only under heavy contention on one order).
CAS_ATTEMPTS = 20


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisCommerce(RedisEvents):
    """Mixed into RedisStore: the idempotency and accept parts of the Store protocol."""

    async def get_store(self, store_id: str) -> StoreRecord | None:
        raise NotImplementedError  # RedisStore provides it

    async def claim_idempotency(
        self,
        store_id: str,
        key: str,
        fingerprint: str,
        owner: str,
        now_ms: int,
        *,
        lease_ms: int,
        ttl_ms: int,
    ) -> IdempotencyClaim:
        reply = await self._script(
            "claim an idempotency key",
            CLAIM_IDEMPOTENCY,
            [StoreKeys(store_id).idempotency(key)],
            [fingerprint, owner, str(now_ms), str(lease_ms), str(ttl_ms), str(now_ms + ttl_ms)],
            # Fails closed quickly: the accept answers 503 and the client retries with the same
            # key. Completing after a charge is patient instead (money has moved).
            deadline_s=self.accept_timeout_s,
        )
        state = _text(reply[0])
        if state == "done":
            return IdempotencyClaim("done", int(reply[1]), bytes(reply[2]))
        if state not in ("claimed", "in_progress", "mismatch"):
            raise StoreError(f"unexpected idempotency state {state!r}")
        return IdempotencyClaim(state)  # type: ignore[arg-type]

    async def complete_idempotency(
        self, store_id: str, key: str, owner: str, status: int, body: bytes
    ) -> None:
        await self._script(
            "complete an idempotency key",
            COMPLETE_IDEMPOTENCY,
            [StoreKeys(store_id).idempotency(key)],
            [owner, str(status), body],
        )

    async def release_idempotency(self, store_id: str, key: str, owner: str) -> None:
        await self._script(
            "release an idempotency key",
            RELEASE_IDEMPOTENCY,
            [StoreKeys(store_id).idempotency(key)],
            [owner],
        )

    async def reserve_accept(
        self,
        store_id: str,
        order_id: str,
        product_id: str,
        idempotency_key: str,
        *,
        cap: int,
        now_ms: int,
        lease_ms: int,
    ) -> Reservation:
        reply = _text(
            await self._script(
                "reserve an accept",
                RESERVE_ACCEPT,
                [StoreKeys(store_id).accepts(order_id)],
                [product_id, idempotency_key, str(cap), str(now_ms), str(lease_ms)],
                deadline_s=self.accept_timeout_s,
            )
        )
        if reply not in ("reserved", "already_accepted", "cap_reached", "in_progress"):
            raise StoreError(f"unexpected reservation {reply!r}")
        return reply  # type: ignore[return-value]

    async def cancel_accept(
        self, store_id: str, order_id: str, product_id: str, idempotency_key: str
    ) -> None:
        await self._script(
            "cancel an accept",
            CANCEL_ACCEPT,
            [StoreKeys(store_id).accepts(order_id)],
            [product_id, idempotency_key],
        )

    async def complete_accept(
        self, store_id: str, order_id: str, line: OrderLine, charge_id: str, now_ms: int
    ) -> None:
        k = StoreKeys(store_id)
        member = f"{hex_id(order_id)} {hex_id(line.product_id)} {charge_id}"
        for _ in range(CAS_ATTEMPTS):
            raw = await self._write("read an order", lambda c: c.hget(k.orders, order_id))
            args: list[Any]
            if raw is None:
                args = ["", b"", f"order:{order_id}"]
                buyers: list[str] = []
            else:
                order = orjson.loads(raw)
                order[5].append([line.product_id, line.quantity, line.price])
                args = [sha1(raw), orjson.dumps(order), order[3] or f"order:{order_id}"]
                buyers = subjects(order[2], order[3])
            done = await self._script(
                "complete an accept",
                COMPLETE_ACCEPT,
                [k.accepts(order_id)],
                [
                    k.prefix,
                    order_id,
                    line.product_id,
                    charge_id,
                    str(now_ms),
                    *args,
                    member,
                    str(keys.VISITOR_TTL_S),
                    *buyers,
                ],
            )
            if done:
                return
        raise StoreError(f"order {order_id!r} kept changing while an accept completed")

    async def iter_accepts(
        self, store_id: str, since_ms: int, until_ms: int
    ) -> AsyncIterator[AcceptedOffer]:
        log = StoreKeys(store_id).accept_log
        async for member, at_ms in self._score_range(log, since_ms, until_ms):
            order_hex, product_hex, charge_id = member.decode().split(" ", 2)
            yield AcceptedOffer(
                bytes.fromhex(order_hex).decode(),
                bytes.fromhex(product_hex).decode(),
                charge_id,
                at_ms,
            )

    async def rotate_signing_key(self, store_id: str, new_key: SigningKey) -> StoreRecord:
        await self._script(
            "rotate the signing key",
            ROTATE_SIGNING_KEY,
            [StoreKeys(store_id).record],
            [orjson.dumps({"kid": new_key.kid, "secret": new_key.secret.hex()}).decode()],
        )
        record = await self.get_store(store_id)
        if record is None:
            raise StoreError(f"unknown store {store_id!r}")
        return record

    async def rotate_webhook_secret(self, store_id: str, new_secret: str) -> StoreRecord:
        await self._script(
            "rotate the webhook secret",
            ROTATE_WEBHOOK_SECRET,
            [StoreKeys(store_id).record],
            [new_secret],
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
            old_index = keys.key_index(_text(old))
            if int(at) <= now_ms:
                await self._do("retire a key", "delete", old_index)
            else:
                await self._do("retire a key", "pexpireat", old_index, int(at))
        record = await self.get_store(store_id)
        if record is None:
            raise StoreError(f"unknown store {store_id!r}")
        return record
