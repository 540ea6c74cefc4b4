"""The call to a store's charge endpoint, and what its answer says about the buyer's card."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import orjson

from offer_service.commerce.egress import PublicOnlyTransport, RefusedAddress
from offer_service.domain.charge_urls import BadChargeUrl, check_charge_url
from offer_service.domain.records import ChargeAttempt
from offer_service.domain.signatures import signature

# The accept's own call: the shopper is waiting for it (docs/api.md).
CHARGE_TIMEOUT_S = 5.0

log = logging.getLogger(__name__)

# charged: the endpoint confirmed the charge; declined: a 402; failed: certainly not charged by
# this call (it never reached the endpoint, or the endpoint refused it); unknown: the request
# may have been acted on, and its answer was lost, late or not an answer from the endpoint.
ChargeStatus = Literal["charged", "declined", "failed", "unknown"]

# Answers of a gateway in front of the endpoint that say nothing of what the endpoint did: a
# bad gateway may have lost the connection mid-request, a gateway timeout gave up waiting.
GATEWAY_STATUSES = frozenset({502, 504})
# Errors raised before a single byte of the request was sent.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(frozen=True, slots=True)
class ChargeResult:
    status: ChargeStatus
    charge_id: str = ""
    reason: str = ""


def charge_payload(attempt: ChargeAttempt) -> dict[str, Any]:
    """The body of the call (docs/api.md "The store's charge endpoint"): always the recorded
    attempt's, so every call for one charge asks for the same thing under the same key."""
    return {
        "order_id": attempt.order_id,
        "product_id": attempt.product_id,
        "quantity": attempt.quantity,
        "amount": {"amount": attempt.amount, "currency": attempt.currency},
        "offer_id": attempt.offer_id,
        "idempotency_key": attempt.charge_key,
    }


class Charger:
    """Calls a store's charge endpoint, signed with its webhook secret, at a public address only
    (unless the operator allows private ones): the URL is checked again before every call and
    the host's addresses before every connection (egress.py). Redirects are not followed.
    `timeout_s` bounds the accept's own call as a whole; settling may allow more."""

    def __init__(self, *, allow_private: bool = False, timeout_s: float = CHARGE_TIMEOUT_S) -> None:
        self._allow_private = allow_private
        self.timeout_s = timeout_s
        self._client: httpx.AsyncClient | None = None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=PublicOnlyTransport(allow_private=self._allow_private),
                timeout=self.timeout_s,
                follow_redirects=False,
                # No proxy or credentials from the environment: the address checked is the
                # address called.
                trust_env=False,
            )
        return self._client

    async def charge(
        self, url: str, secret: str, payload: dict[str, Any], *, timeout_s: float | None = None
    ) -> ChargeResult:
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
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
            # httpx's timeout bounds each phase; this bounds the call, however the endpoint
            # trickles its answer.
            async with asyncio.timeout(timeout_s):
                response = await self._http().post(
                    url, content=body, headers=headers, timeout=timeout_s
                )
        except NOT_SENT as exc:
            if isinstance(exc.__cause__, RefusedAddress):
                log.warning("charge refused: %s", exc)
            return ChargeResult("failed", reason=str(exc) or type(exc).__name__)
        except (httpx.HTTPError, TimeoutError) as exc:
            return ChargeResult("unknown", reason=type(exc).__name__)
        return read_answer(response.status_code, response.content)


def read_answer(status: int, content: bytes) -> ChargeResult:
    """What the endpoint's answer says: 2xx with a charge_id charged, 402 declined, a gateway's
    502 or 504 (or a 2xx without a charge_id) unknown, anything else not charged."""
    if status == 402:
        return ChargeResult("declined")
    if 200 <= status < 300:
        try:
            charge_id = orjson.loads(content).get("charge_id")
        except (orjson.JSONDecodeError, AttributeError):
            charge_id = None
        if isinstance(charge_id, str) and charge_id:
            return ChargeResult("charged", charge_id=charge_id)
        return ChargeResult("unknown", reason="no charge_id in the charge endpoint's answer")
    if status in GATEWAY_STATUSES:
        return ChargeResult("unknown", reason=f"charge endpoint answered {status}")
    return ChargeResult("failed", reason=f"charge endpoint answered {status}")
