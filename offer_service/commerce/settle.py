"""Settling a recorded charge: the answers its outcome becomes, and the loop that retries the
charges whose outcome is unknown until the store's charge endpoint says what happened.

An accept writes its charge down (amount, quantity, processor key) before the call
(`Store.record_charge`). When the call's outcome is unknown (a timeout, a lost connection, a
gateway's error, a crash, a store outage after the call) the accept answers 202 `pending`, and
the charge stays recorded: the settler of any serving process calls again with the very same
body and processor key, which the merchant's processor answers without charging twice, and
records the outcome, once. The accept's Idempotency-Key then replays the settled answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import orjson

from offer_service.commerce.charger import Charger, ChargeResult, charge_payload
from offer_service.domain.orders import OrderLine
from offer_service.domain.records import ChargeAttempt
from offer_service.exceptions import StoreError
from offer_service.serving.loops import every
from offer_service.storage.protocols import Store

# How often every serving process looks for charges to settle (settings.py), and how long a
# settling call may take: nobody waits on it, so a slow endpoint gets longer than the accept's.
SETTLE_INTERVAL_S = 5.0
SETTLE_TIMEOUT_S = 30.0
# Between two calls for one charge the wait doubles from the interval up to this.
MAX_BACKOFF_S = 300.0
# Charges looked at per pass.
BATCH = 100
# Past this many calls without an outcome, each further one is logged as an error.
CALLS_BEFORE_ALARM = 10

PENDING_MESSAGE = (
    "The charge was sent but its outcome is not known yet; it is being settled with the store's "
    "charge endpoint. Retry with the same Idempotency-Key for the final answer."
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    """An HTTP answer; `final` answers are stored and replayed for the same key."""

    status: int
    body: bytes
    final: bool = True


def error(status: int, code: str, message: str, *, final: bool = True) -> Outcome:
    body = orjson.dumps({"error": {"code": code, "message": message, "details": []}})
    return Outcome(status, body, final)


def lease_ms(timeout_s: float) -> int:
    """How long a call's lease runs: the call's own bound and a margin to record its outcome."""
    return int(timeout_s * 1000) + 2_000


def accepted(attempt: ChargeAttempt, charge_id: str) -> Outcome:
    body = orjson.dumps(
        {
            "status": "accepted",
            "order_id": attempt.order_id,
            "product_id": attempt.product_id,
            "charged": {"amount": attempt.amount, "currency": attempt.currency},
            "charge_id": charge_id,
            "offer_id": attempt.offer_id,
        }
    )
    return Outcome(200, body)


def pending(attempt: ChargeAttempt) -> Outcome:
    """202: the charge may have been made; never an answer that says it was not."""
    body = orjson.dumps(
        {
            "status": "pending",
            "code": "charge_pending",
            "message": PENDING_MESSAGE,
            "order_id": attempt.order_id,
            "product_id": attempt.product_id,
            "quantity": attempt.quantity,
            "amount": {"amount": attempt.amount, "currency": attempt.currency},
            "offer_id": attempt.offer_id,
        }
    )
    return Outcome(202, body, final=False)


DECLINED = error(402, "payment_declined", "The payment method was declined.")
NOT_CHARGED = error(
    502,
    "charge_failed",
    "The store's charge endpoint did not charge; retry with the same Idempotency-Key.",
    final=False,
)


async def settle(
    store: Store,
    attempt: ChargeAttempt,
    result: ChargeResult,
    *,
    calls: int,
    charged: bool = False,
    now_ms: int | None = None,
) -> Outcome:
    """Record what a call for `attempt` (the `calls`-th leased for it) learnt, and the answer.

    A call that certainly did not charge ends the charge only when it was the first: after a
    call whose outcome was lost, the processor's answer for the key is the only proof, so a
    later call that never reached it proves nothing."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    where = (attempt.store_id, attempt.order_id, attempt.product_id, attempt.idempotency_key)
    if result.status == "charged":
        line = OrderLine(attempt.product_id, attempt.quantity, attempt.unit_price)
        await store.complete_accept(
            attempt.store_id, attempt.order_id, line, result.charge_id, now_ms
        )
        return accepted(attempt, result.charge_id)
    if charged:  # recorded as charged: only the answer was lost, and it still is
        return pending(attempt)
    if result.status == "declined":
        await store.cancel_accept(*where)
        return DECLINED
    if result.status == "failed" and calls <= 1:
        await store.cancel_accept(*where)
        return NOT_CHARGED
    log.warning(
        "charge %s of order %r (store %r): outcome unknown after call %d (%s); it is settled later",
        attempt.charge_key,
        attempt.order_id,
        attempt.store_id,
        calls,
        result.reason or result.status,
    )
    return pending(attempt)


class Settler:
    """Calls again, with the same body and processor key, every recorded charge whose outcome
    is unknown and whose lease has run out, and records what it learns; one pass every
    `interval_s`. Any number of processes may run one: a lease lets one call at a time."""

    def __init__(
        self,
        store: Store,
        charger: Charger,
        *,
        interval_s: float = SETTLE_INTERVAL_S,
        timeout_s: float = SETTLE_TIMEOUT_S,
    ) -> None:
        self.store = store
        self.charger = charger
        self.interval_s = interval_s
        self.timeout_s = timeout_s

    def backoff_ms(self, calls: int) -> int:
        """The wait after the `calls`-th call before the next one."""
        return int(min(self.interval_s * 2 ** max(calls - 1, 0), MAX_BACKOFF_S) * 1000)

    async def run_once(self) -> int:
        """One pass, its calls made together (one slow endpoint must not hold up the rest):
        the charges settled."""
        now_ms = int(time.time() * 1000)
        pending = await self.store.pending_charges(now_ms, BATCH)
        return sum(await asyncio.gather(*(self._settle_logged(a, n) for a, n in pending)))

    async def _settle_logged(self, attempt: ChargeAttempt, calls: int) -> int:
        try:
            return await self.settle_one(attempt, calls)
        except StoreError as exc:
            log.warning("settling charge %s waits for the store: %s", attempt.charge_key, exc)
            return 0

    async def settle_one(self, attempt: ChargeAttempt, calls: int) -> int:
        """Call once more for a charge that had `calls` calls; 1 when that settled it."""
        # The lease outlasts this call, and then the backoff keeps the next call away.
        claim = await self.store.record_charge(
            attempt,
            now_ms=int(time.time() * 1000),
            lease_ms=lease_ms(self.timeout_s) + self.backoff_ms(calls + 1),
        )
        if claim.turn != "call" or claim.attempt is None:
            return 0
        recorded = claim.attempt
        record = await self.store.get_store(attempt.store_id)
        url = record.rules.charge_url if record is not None else None
        if record is None or not url:
            # Never dropped: its charge may have been made. The operator restores the URL.
            log.error(
                "charge %s cannot be settled: its store has no charge_url", recorded.charge_key
            )
            return 0
        result = await self.charger.charge(
            url, record.webhook_secret, charge_payload(recorded), timeout_s=self.timeout_s
        )
        outcome = await settle(self.store, recorded, result, calls=claim.calls)
        if outcome.status == 202:
            alarm = claim.calls >= CALLS_BEFORE_ALARM
            log.log(
                logging.ERROR if alarm else logging.INFO,
                "charge %s still unsettled after %d calls",
                recorded.charge_key,
                claim.calls,
            )
            return 0
        answer = (outcome.status, outcome.body) if outcome.final else None
        await self.store.settle_idempotency(attempt.store_id, recorded.idempotency_key, answer)
        log.info(
            "charge %s of order %r settled: %d",
            recorded.charge_key,
            recorded.order_id,
            outcome.status,
        )
        return 1

    async def run(self, stop: asyncio.Event) -> None:
        await every(self.interval_s, self.run_once, stop, log, "the settler waits for the store")
