"""Redis keys where money moves: idempotency claims, accept reservations, recorded charges.

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
from offer_service.domain.records import ChargeAttempt, ChargeClaim, IdempotencyClaim, Reservation
from offer_service.exceptions import StoreError
from offer_service.storage.codec import (
    dump_charge_attempt,
    line_rows,
    load_charge_attempt,
    subjects,
)
from offer_service.storage.redis import keys
from offer_service.storage.redis.client import CAS_ATTEMPTS, RedisBase, hex_id, sha1, text
from offer_service.storage.redis.keys import StoreKeys
from offer_service.storage.redis.scripts.commerce import (
    CANCEL_ACCEPT,
    CLAIM_IDEMPOTENCY,
    COMPLETE_ACCEPT,
    COMPLETE_IDEMPOTENCY,
    RECORD_CHARGE,
    RELEASE_IDEMPOTENCY,
    RESERVE_ACCEPT,
    SETTLE_IDEMPOTENCY,
)


def charge_member(order_id: str, product_id: str) -> str:
    """A recorded charge's member in the store's `charges_due` and `charge_calls`."""
    return f"{hex_id(order_id)} {hex_id(product_id)}"


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

    async def settle_idempotency(
        self, store_id: str, key: str, answer: tuple[int, bytes] | None
    ) -> None:
        await self._script(
            "settle an idempotency key",
            SETTLE_IDEMPOTENCY,
            [StoreKeys(store_id).idempotency(key)],
            ["", b""] if answer is None else [str(answer[0]), answer[1]],
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

    async def record_charge(
        self, attempt: ChargeAttempt, *, now_ms: int, lease_ms: int
    ) -> ChargeClaim:
        k = StoreKeys(attempt.store_id)
        reply = await self._script(
            "record a charge",
            RECORD_CHARGE,
            [k.accepts(attempt.order_id)],
            [
                k.prefix,
                attempt.order_id,
                attempt.product_id,
                attempt.idempotency_key,
                str(now_ms),
                str(lease_ms),
                dump_charge_attempt(attempt),
                charge_member(attempt.order_id, attempt.product_id),
            ],
        )
        turn = text(reply[0])
        if turn == "lost":
            return ChargeClaim("lost")
        if turn not in ("call", "busy"):
            raise StoreError(f"unexpected charge turn {turn!r}")
        recorded = load_charge_attempt(attempt.store_id, reply[1])
        return ChargeClaim(turn, recorded, int(reply[2]), charged=text(reply[3]) == "1")  # type: ignore[arg-type]

    async def pending_charges(self, now_ms: int, limit: int) -> list[tuple[ChargeAttempt, int]]:
        found: list[tuple[int, ChargeAttempt, int]] = []
        members = await self._write("list stores", lambda c: c.smembers(keys.STORES))
        for store_id in sorted(text(m) for m in members):
            k = StoreKeys(store_id)
            due: list[tuple[bytes, float]] = await self._do(
                "list unsettled charges",
                "zrangebyscore",
                k.charges_due,
                "-inf",
                now_ms,
                start=0,
                num=limit,
                withscores=True,
            )
            for member, score in due:
                order_hex, product_hex = text(member).split(" ")
                order_id = bytes.fromhex(order_hex).decode()
                product_id = bytes.fromhex(product_hex).decode()
                raw = await self._do("read a charge", "hget", k.charges(order_id), product_id)
                calls = await self._do("read a charge", "hget", k.charge_calls, member)
                if raw is not None:
                    attempt = load_charge_attempt(store_id, raw)
                    found.append((int(score), attempt, int(calls or 0)))
        found.sort(key=lambda row: row[0])
        return [(attempt, calls) for _, attempt, calls in found[:limit]]

    async def cancel_accept(
        self, store_id: str, order_id: str, product_id: str, idempotency_key: str
    ) -> None:
        k = StoreKeys(store_id)
        await self._script(
            "cancel an accept",
            CANCEL_ACCEPT,
            [k.accepts(order_id)],
            [k.prefix, order_id, product_id, idempotency_key, charge_member(order_id, product_id)],
        )

    async def complete_accept(
        self, store_id: str, order_id: str, line: OrderLine, charge_id: str, now_ms: int
    ) -> None:
        k = StoreKeys(store_id)
        member = f"{charge_member(order_id, line.product_id)} {charge_id}"
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
