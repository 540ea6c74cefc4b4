"""One-click post-purchase accept: idempotency, the order's rules, the store's charge endpoint.

Money moves here, so every step is ordered to make a double charge impossible:
1. the Idempotency-Key is claimed atomically in the store (a replay returns the first answer byte
   for byte; the same key still running is 409; the same key with another body is 422);
2. the token is verified (it binds price, discount, currency, order and product) and the order's
   window, status and accepted-offer cap are checked;
3. the offer is reserved on the order atomically (one accept per product per order, within the cap);
4. the store's charge endpoint is called with a deterministic idempotency key derived from store,
   order and product, so even a retry after a crash is de-duplicated by the merchant's processor;
5. only then is the item appended to the order and the answer stored for replay.
A claim whose process died mid-charge is taken over after a lease, and the retry charges with the
same processor key.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import orjson

from offer_service.commerce.egress import PublicOnlyTransport, RefusedAddress
from offer_service.domain.charge_urls import BadChargeUrl, check_charge_url
from offer_service.domain.orders import OrderLine
from offer_service.domain.records import StoreRecord
from offer_service.domain.signatures import signature
from offer_service.domain.surfaces import Surface
from offer_service.domain.tokens import BadToken, OfferClaims, verify
from offer_service.storage.protocols import Store
from offer_service.types import DAY_MS, MINUTE_MS

IDEMPOTENCY_TTL_MS = DAY_MS
# Longer than the charge timeout: a claim this old whose owner never finished is taken over.
LEASE_MS = 15_000
CHARGE_TIMEOUT_S = 5.0

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


def fingerprint(token: str, quantity: int) -> str:
    """What makes two accepts "the same request" for idempotency."""
    return hashlib.sha256(orjson.dumps([token, quantity])).hexdigest()


def charge_key(store_id: str, order_id: str, product_id: str) -> str:
    """The processor-facing idempotency key: one per offer per order, whatever the caller's key."""
    digest = hashlib.sha256(f"{store_id}:{order_id}:{product_id}".encode()).hexdigest()
    return "acc_" + digest[:40]


ChargeStatus = Literal["charged", "declined", "failed"]


@dataclass(frozen=True, slots=True)
class ChargeResult:
    status: ChargeStatus
    charge_id: str = ""
    reason: str = ""


class Charger:
    """Calls a store's charge endpoint, signed with its webhook secret, at a public address only
    (unless the operator allows private ones): the URL is checked again before every call and
    the host's addresses before every connection (egress.py). Redirects are not followed."""

    def __init__(self, *, allow_private: bool = False) -> None:
        self._allow_private = allow_private
        self._client: httpx.AsyncClient | None = None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=PublicOnlyTransport(allow_private=self._allow_private),
                timeout=CHARGE_TIMEOUT_S,
                follow_redirects=False,
                # No proxy or credentials from the environment: the address checked is the
                # address called.
                trust_env=False,
            )
        return self._client

    async def charge(self, url: str, secret: str, payload: dict[str, Any]) -> ChargeResult:
        try:
            # Also here: a charge_url stored before the checks existed was never checked.
            check_charge_url(url, allow_private=self._allow_private)
        except BadChargeUrl as exc:
            log.warning("charge refused: %s", exc)
            return ChargeResult("failed", reason=str(exc))
        body = orjson.dumps(payload)
        headers = {
            "Content-Type": "application/json",
            "X-Offer-Signature": signature(secret, body, int(time.time())),
        }
        try:
            response = await self._http().post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            if isinstance(exc.__cause__, RefusedAddress):
                log.warning("charge refused: %s", exc)
                return ChargeResult("failed", reason=str(exc))
            return ChargeResult("failed", reason=type(exc).__name__)
        if response.status_code == 402:
            return ChargeResult("declined")
        if 200 <= response.status_code < 300:
            try:
                charge_id = orjson.loads(response.content).get("charge_id")
            except (orjson.JSONDecodeError, AttributeError):
                charge_id = None
            if isinstance(charge_id, str) and charge_id:
                return ChargeResult("charged", charge_id=charge_id)
            return ChargeResult("failed", reason="no charge_id in the charge endpoint's answer")
        return ChargeResult("failed", reason=f"charge endpoint answered {response.status_code}")


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
        lease_ms=LEASE_MS,
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
        await store.release_idempotency(record.id, idempotency_key, owner)
        raise
    if outcome.final:
        await store.complete_idempotency(
            record.id, idempotency_key, owner, outcome.status, outcome.body
        )
    else:
        await store.release_idempotency(record.id, idempotency_key, owner)
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
    amount = claims.offer_price * quantity
    key = charge_key(record.id, order.id, claims.product_id)
    if not record.rules.charge_url:
        await store.cancel_accept(record.id, order.id, claims.product_id, idempotency_key)
        return error(
            502, "charge_failed", "The store has no charge endpoint configured.", final=False
        )
    result = await charger.charge(
        record.rules.charge_url,
        record.webhook_secret,
        {
            "order_id": order.id,
            "product_id": claims.product_id,
            "quantity": quantity,
            "amount": {"amount": amount, "currency": claims.currency},
            "offer_id": claims.offer_id,
            "idempotency_key": key,
        },
    )
    if result.status == "declined":
        await store.cancel_accept(record.id, order.id, claims.product_id, idempotency_key)
        return error(402, "payment_declined", "The payment method was declined.")
    if result.status == "failed":
        await store.cancel_accept(record.id, order.id, claims.product_id, idempotency_key)
        return error(
            502,
            "charge_failed",
            "The store's charge endpoint did not confirm the charge; retry with the same "
            "Idempotency-Key.",
            final=False,
        )
    await store.complete_accept(
        record.id,
        order.id,
        OrderLine(claims.product_id, quantity, claims.offer_price),
        result.charge_id,
        now_ms,
    )
    body = orjson.dumps(
        {
            "status": "accepted",
            "order_id": order.id,
            "product_id": claims.product_id,
            "charged": {"amount": amount, "currency": claims.currency},
            "charge_id": result.charge_id,
            "offer_id": claims.offer_id,
        }
    )
    return Outcome(200, body)
