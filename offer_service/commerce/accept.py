"""One-click post-purchase accept: idempotency, the order's rules, the store's charge endpoint.

Money moves here, so every step is ordered to make a double charge, or a charge never
recorded, impossible:
1. the Idempotency-Key is claimed atomically in the store (a replay returns the first answer byte
   for byte; the same key still running is 409; the same key with another body is 422, also
   after an answer that was not final);
2. the token is verified (it binds price, discount, currency, order and product) and the order's
   window, status and accepted-offer cap are checked;
3. the offer is reserved on the order atomically (one accept per product per order, within the cap);
4. the charge (amount, quantity and a processor idempotency key derived from store, order and
   product) is written down durably, and only then is the store's charge endpoint called;
5. the outcome is recorded: charged (the item joins the order), declined or certainly not
   charged (the reservation is dropped), or unknown (202 `pending`: settle.py calls again with
   the same body and key until the endpoint says, without the client retrying).
A claim whose process died mid-charge is taken over after a lease; its recorded charge is
settled by any serving process.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import time

import orjson

from offer_service.commerce.charger import Charger, ChargeResult, charge_payload
from offer_service.commerce.settle import Outcome, error, lease_ms, pending, settle
from offer_service.domain.records import ChargeAttempt, StoreRecord
from offer_service.domain.surfaces import Surface
from offer_service.domain.tokens import BadToken, OfferClaims, verify
from offer_service.exceptions import StoreError
from offer_service.storage.protocols import Store
from offer_service.types import DAY_MS, MINUTE_MS

IDEMPOTENCY_TTL_MS = DAY_MS
# Longer than the charge timeout: a claim this old whose owner never finished is taken over.
LEASE_MS = 15_000

log = logging.getLogger(__name__)


def fingerprint(token: str, quantity: int) -> str:
    """What makes two accepts "the same request" for idempotency."""
    return hashlib.sha256(orjson.dumps([token, quantity])).hexdigest()


def charge_key(store_id: str, order_id: str, product_id: str) -> str:
    """The processor-facing idempotency key: one per offer per order, whatever the caller's key."""
    digest = hashlib.sha256(f"{store_id}:{order_id}:{product_id}".encode()).hexdigest()
    return "acc_" + digest[:40]


async def accept(
    store: Store,
    charger: Charger,
    record: StoreRecord,
    idempotency_key: str,
    token: str,
    quantity: int,
    *,
    now_s: float | None = None,
) -> Outcome:
    now_s = time.time() if now_s is None else now_s
    now_ms = int(now_s * 1000)
    owner = secrets.token_hex(8)
    claim = await store.claim_idempotency(
        record.id,
        idempotency_key,
        fingerprint(token, quantity),
        owner,
        now_ms,
        lease_ms=max(LEASE_MS, lease_ms(charger.timeout_s)),
        ttl_ms=IDEMPOTENCY_TTL_MS,
    )
    if claim.state == "done":
        return Outcome(claim.status, claim.body)
    if claim.state == "in_progress":
        return error(
            409, "in_progress", "A request with this Idempotency-Key is still running.", final=False
        )
    if claim.state == "mismatch":
        return error(
            422,
            "idempotency_key_reused",
            "This Idempotency-Key was used with a different request body.",
            final=False,
        )
    try:
        outcome = await _accept_claimed(
            store, charger, record, idempotency_key, token, quantity, now_s, now_ms
        )
    except BaseException:
        with contextlib.suppress(StoreError):
            await store.release_idempotency(record.id, idempotency_key, owner)
        raise
    try:
        if outcome.final:
            await store.complete_idempotency(
                record.id, idempotency_key, owner, outcome.status, outcome.body
            )
        else:
            await store.release_idempotency(record.id, idempotency_key, owner)
    except StoreError:
        if outcome.status not in (200, 202):
            raise
        # The charge is recorded; the settler finishes the key's answer when the store is back.
        log.warning("the answer of an accept could not be stored; the settler stores it")
    return outcome


def acceptable_surface(claims: OfferClaims, record: StoreRecord) -> bool:
    if claims.surface == Surface.THANK_YOU.value:
        return True
    return claims.surface == Surface.CHECKOUT.value and record.rules.checkout_accept


async def _accept_claimed(
    store: Store,
    charger: Charger,
    record: StoreRecord,
    idempotency_key: str,
    token: str,
    quantity: int,
    now_s: float,
    now_ms: int,
) -> Outcome:
    try:
        claims = verify(token, record.signing_keys, now_s)
    except BadToken as exc:
        if exc.reason == "expired":
            return error(410, "offer_expired", "This offer has expired.")
        return error(403, "bad_token", "The offer token is not valid for this store.")
    if claims.store_id != record.id:
        return error(403, "bad_token", "The offer token is not valid for this store.")
    if not acceptable_surface(claims, record) or claims.order_id is None:
        return error(403, "bad_token", "This offer cannot be accepted one-click.")
    order = await store.get_order(record.id, claims.order_id)
    if order is None:
        return error(403, "bad_token", "The offer token does not match an order of this store.")
    window_ms = record.rules.post_purchase_window_minutes * MINUTE_MS
    if order.status == "returned" or now_ms > order.placed_at_ms + window_ms:
        return error(410, "offer_expired", "The post-purchase window of this order has closed.")
    reservation = await store.reserve_accept(
        record.id,
        order.id,
        claims.product_id,
        idempotency_key,
        cap=record.rules.accept_cap,
        now_ms=now_ms,
        lease_ms=LEASE_MS,
    )
    if reservation == "already_accepted":
        return error(409, "already_accepted", "This offer was already accepted on this order.")
    if reservation == "cap_reached":
        return error(
            422, "accept_limit_reached", "This order has reached its limit of accepted offers."
        )
    if reservation == "in_progress":
        return error(
            409, "in_progress", "This offer is being accepted by another request.", final=False
        )
    attempt = ChargeAttempt(
        store_id=record.id,
        order_id=order.id,
        product_id=claims.product_id,
        idempotency_key=idempotency_key,
        charge_key=charge_key(record.id, order.id, claims.product_id),
        quantity=quantity,
        unit_price=claims.offer_price,
        currency=claims.currency,
        offer_id=claims.offer_id,
        started_ms=now_ms,
    )
    # Written down before the call: if the call's outcome is lost, this is what settles it.
    turn = await store.record_charge(attempt, now_ms=now_ms, lease_ms=lease_ms(charger.timeout_s))
    if turn.turn == "lost" or turn.attempt is None:
        return error(
            409, "in_progress", "This offer is being accepted by another request.", final=False
        )
    # A charge recorded earlier under this key stays what it was.
    recorded = turn.attempt
    if turn.turn == "busy":
        return pending(recorded)
    url = record.rules.charge_url
    if url:
        result = await charger.charge(url, record.webhook_secret, charge_payload(recorded))
    else:
        # No call now; but one made earlier for this charge may have charged (settle decides).
        result = ChargeResult("failed", reason="no charge_url")
    try:
        outcome = await settle(store, recorded, result, calls=turn.calls, charged=turn.charged)
    except StoreError as exc:
        # The call was made: whatever it did, "nothing was charged" may be false now.
        log.warning("the outcome of charge %s could not be recorded: %s", recorded.charge_key, exc)
        return pending(recorded)
    if not url and outcome.status == 502:
        return error(
            502, "charge_failed", "The store has no charge endpoint configured.", final=False
        )
    return outcome
