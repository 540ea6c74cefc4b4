"""The demo's charge endpoint (`/demo/charge`), as a merchant implements it, and its address.

It verifies the signature, approves with a charge id (one per idempotency key) and declines
(402) orders placed by the customer `decline-card` (the checkout page's "Simulate a declined
card" box). `GET /demo/charges` lists the charges this process has seen (demo only).

The demo store's `charge_url` must point at this very server. The `demo` command knows its port
(`OFFER_DEMO_PORT`, see `charge_url_from_env`); when it does not (tests pick a free port after
building the app), the first storefront request sets it from the address the connection arrived
on (the ASGI `server` of the socket, never the client's Host header).
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from offer_service.domain.records import StoreRecord
from offer_service.domain.signatures import verify
from offer_service.types import is_whole
from offer_service.web.endpoints.common import engine, read_body

CHARGE_LIMIT = 64 * 1024
# The documented decline trigger: orders of this customer are declined by /demo/charge.
DECLINE_CUSTOMER = "decline-card"


def charge_url_from_env(environ: Mapping[str, str] = os.environ) -> str | None:
    """The demo charge endpoint of a server started by `offer-service demo` (OFFER_DEMO_PORT)."""
    port = environ.get("OFFER_DEMO_PORT", "")
    return f"http://127.0.0.1:{port}/demo/charge" if is_whole(port) else None


def own_charge_url(scope: Scope) -> str | None:
    """`/demo/charge` on the socket address this request arrived on (not the Host header)."""
    server = scope.get("server")
    if not server or server[1] is None:
        return None
    host, port = str(server[0]), int(server[1])
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/demo/charge"


def is_demo_charge_url(url: str | None) -> bool:
    """An unset charge URL, or one of ours: a store owner's own endpoint is never replaced."""
    return url is None or urlsplit(url).path == "/demo/charge"


# ---- the charge endpoint's memory ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Charge:
    charge_id: str
    idempotency_key: str
    order_id: str
    product_id: str
    quantity: int
    amount: dict[str, Any]
    offer_id: str
    at: str


@dataclass
class ChargeLog:
    """What /demo/charge has done in this process: charges by idempotency key, every request."""

    by_key: dict[str, Charge] = field(default_factory=dict)
    requests: int = 0
    declined: int = 0

    def for_order(self, order_id: str) -> list[Charge]:
        return [c for c in self.by_key.values() if c.order_id == order_id]


# ---- the merchant's charge endpoint -------------------------------------------------------


class ChargeEndpoint:
    """`POST /demo/charge` and `GET /demo/charges` over one app's charge log."""

    def __init__(self, record: Callable[[Request], Awaitable[StoreRecord | None]]) -> None:
        self.charges = ChargeLog()
        self._record = record

    async def charge(self, request: Request) -> Response:
        """API.md "The store's charge endpoint", as a merchant would implement it."""
        record = await self._record(request)
        if record is None:
            return _json_error(503, "unavailable", "The demo store is not installed.")
        raw = await read_body(request, CHARGE_LIMIT)
        header = request.headers.get("x-offer-signature", "")
        if not verify(header, raw, record.webhook_secrets, time.time()):
            return _json_error(401, "bad_signature", "The X-Offer-Signature header is invalid.")
        self.charges.requests += 1
        request_body = _charge_request(raw)
        if request_body is None:
            return _json_error(422, "invalid_charge", "The charge request is malformed.")
        key = request_body["idempotency_key"]
        if key in self.charges.by_key:
            return _json({"charge_id": self.charges.by_key[key].charge_id})
        order = await engine(request).store.get_order(record.id, request_body["order_id"])
        if order is None:
            return _json_error(404, "unknown_order", "This store has no such order.")
        if order.customer_id == DECLINE_CUSTOMER:
            self.charges.declined += 1
            return _json_error(402, "card_declined", "The card on file was declined.")
        existing = self.charges.by_key.get(key)  # an identical request may have won meanwhile
        if existing is None:
            existing = Charge(
                charge_id="ch_demo_" + secrets.token_hex(8),
                idempotency_key=key,
                order_id=order.id,
                product_id=request_body["product_id"],
                quantity=request_body["quantity"],
                amount=request_body["amount"],
                offer_id=request_body["offer_id"],
                at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
            self.charges.by_key[key] = existing
        return _json({"charge_id": existing.charge_id})

    async def list_charges(self, request: Request) -> Response:
        """Demo only: what /demo/charge did (the browser tests count charges with it)."""
        order_id = request.query_params.get("order_id")
        charges = [
            asdict(c)
            for c in self.charges.by_key.values()
            if order_id is None or c.order_id == order_id
        ]
        return _json(
            {
                "requests": self.charges.requests,
                "declined": self.charges.declined,
                "charges": charges,
            }
        )


def _charge_request(raw: bytes) -> dict[str, Any] | None:
    """The charge body's fields, or None when one is missing or of the wrong type."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict):
        return None
    amount = body.get("amount")
    strings = ("order_id", "product_id", "idempotency_key")
    if not all(isinstance(body.get(k), str) and body[k] for k in strings):
        return None
    quantity = body.get("quantity")
    if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
        return None
    if not (
        isinstance(amount, dict)
        and isinstance(amount.get("amount"), int)
        and isinstance(amount.get("currency"), str)
    ):
        return None
    offer_id = body.get("offer_id")
    return {
        "order_id": body["order_id"],
        "product_id": body["product_id"],
        "quantity": quantity,
        "amount": {"amount": amount["amount"], "currency": amount["currency"]},
        "offer_id": offer_id if isinstance(offer_id, str) else "",
        "idempotency_key": body["idempotency_key"],
    }


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status, media_type="application/json")


def _json_error(status: int, code: str, message: str) -> Response:
    return _json({"error": {"code": code, "message": message, "details": []}}, status)
