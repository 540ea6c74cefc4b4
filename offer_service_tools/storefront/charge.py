"""The demo's charge endpoint (`/demo/charge`), as a merchant implements it, and its address.

It is the project's one charge double (charge_double.py), which verifies the signature and
approves with a charge id (one per idempotency key); it declines (402) orders placed by the
customer `decline-card` (the checkout page's "Simulate a declined card" box).
`GET /demo/charges` lists the charges this process has seen (demo only).

The demo store's `charge_url` must point at this very server. The `demo` command knows its port
(`OFFER_DEMO_PORT`, see `charge_url_from_env`); when it does not (tests pick a free port after
building the app), the first storefront request sets it from the address the connection arrived
on (the ASGI `server` of the socket, never the client's Host header).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import urlsplit

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from offer_service.domain.records import StoreRecord
from offer_service.types import is_whole
from offer_service.web.endpoints.common import engine, read_body
from offer_service_tools.charge_double import DECLINED, Charge, ChargeDouble, ChargeRequest, Refusal

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


# ---- the merchant's charge endpoint -------------------------------------------------------


class ChargeEndpoint:
    """`POST /demo/charge` and `GET /demo/charges` over the project's one charge double, which
    verifies the signature and charges once per idempotency key; the demo adds what only a
    store knows: which orders exist, and that one customer's card is declined."""

    def __init__(self, record: Callable[[Request], Awaitable[StoreRecord | None]]) -> None:
        # Charge ids stay unique across restarts of the demo, as a processor's are.
        self.charges = ChargeDouble(id_prefix=f"ch_demo_{secrets.token_hex(4)}_")
        self._record = record

    def for_order(self, order_id: str) -> list[Charge]:
        return [c for c in self.charges.charges if c.order_id == order_id]

    async def charge(self, request: Request) -> Response:
        """docs/api.md "The store's charge endpoint", as a merchant would implement it."""
        record = await self._record(request)
        if record is None:
            return Refusal(503, "unavailable", "The demo store is not installed.").response()
        raw = await read_body(request, CHARGE_LIMIT)
        store, store_id = engine(request).store, record.id

        async def decide(charge: ChargeRequest) -> Refusal | None:
            order = await store.get_order(store_id, charge.order_id)
            if order is None:
                return Refusal(404, "unknown_order", "This store has no such order.")
            return DECLINED if order.customer_id == DECLINE_CUSTOMER else None

        signature = request.headers.get("x-offer-signature", "")
        return await self.charges.respond(
            raw, signature, secrets=record.webhook_secrets, decide=decide
        )

    async def list_charges(self, request: Request) -> Response:
        """Demo only: what /demo/charge did (the browser tests count charges with it)."""
        order_id = request.query_params.get("order_id")
        charges = [
            c.as_json() for c in self.charges.charges if order_id is None or c.order_id == order_id
        ]
        body = {
            "requests": len(self.charges.requests),
            "declined": self.charges.declined,
            "charges": charges,
        }
        return Response(orjson.dumps(body), media_type="application/json")
