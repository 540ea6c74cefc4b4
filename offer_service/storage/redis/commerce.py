"""Redis keys where money moves: idempotency claims, accept reservations, charged accepts.

Each check-and-write is one Lua script, so two service processes racing on one Idempotency-Key
or one offer see exactly one winner. Semantics follow `sqlite/commerce.py`, with one deliberate
difference: a claim by the owner that already holds it answers `claimed` again, so a call the
client retried after a dropped connection does not lock its own request out. Owners are random
per request, so no other request can ever present the same one.
"""

from __future__ import annotations

from typing import Any

import orjson

from offer_service.domain.orders import OrderLine
from offer_service.domain.records import IdempotencyClaim, Reservation
from offer_service.exceptions import StoreError
from offer_service.storage.codec import line_rows, subjects
from offer_service.storage.redis import keys
from offer_service.storage.redis.client import CAS_ATTEMPTS, RedisBase, hex_id, sha1, text
from offer_service.storage.redis.keys import StoreKeys
from offer_service.storage.redis.scripts.commerce import (
    CANCEL_ACCEPT,
    CLAIM_IDEMPOTENCY,
    COMPLETE_ACCEPT,
    COMPLETE_IDEMPOTENCY,
    RELEASE_IDEMPOTENCY,
    RESERVE_ACCEPT,
)


class RedisCommerce(RedisBase):
    """The CommerceStore part of the Store protocol: one-click accepts and their idempotency."""

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
        state = text(reply[0])
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
        reply = text(
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
                order[5].extend(line_rows([line]))
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
