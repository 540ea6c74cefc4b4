"""The merchant's charge endpoint, as a real HTTP server: a test double of a store's backend that
charges through a payment processor.

It verifies `X-Offer-Signature` with the store's webhook secret(s), counts charges, and
de-duplicates them by the body's `idempotency_key` exactly as a payment processor does: the same
key answers the same `charge_id` and is charged once. It can be told to decline (402), fail (500),
hang past the service's timeout, or hold its answer until the test releases it (signalling
"charge received" first), for the crash tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import free_port

Mode = Literal["ok", "decline", "error", "hang"]

TOLERANCE_S = 300


def verify_signature(header: str, body: bytes, secrets: list[str], now_s: float) -> bool:
    """The merchant's side of API.md's charge endpoint signature, written independently."""
    try:
        parts = dict(p.strip().split("=", 1) for p in header.split(","))
        t = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError):
        return False
    if abs(now_s - t) > TOLERANCE_S:
        return False
    ok = False
    for secret in secrets:
        expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        ok |= hmac.compare_digest(expected, given)
    return ok


@dataclass(frozen=True)
class Charge:
    charge_id: str
    idempotency_key: str
    order_id: str
    product_id: str
    quantity: int
    amount: int
    currency: str
    offer_id: str


@dataclass
class ChargeDouble:
    """State shared between the server thread and the test; read it through the properties."""

    secrets: list[str]
    mode: Mode = "ok"
    # "ok": answer only once `release` is set (the crash test); otherwise at once.
    hold: bool = False
    hang_s: float = 30.0
    # "ok": seconds to wait before charging (so concurrent requests overlap).
    delay_s: float = 0.0
    url: str = ""
    received: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _requests: list[dict[str, Any]] = field(default_factory=list)
    _bad_signatures: int = 0
    _charges: dict[str, Charge] = field(default_factory=dict)
    _mismatches: int = 0
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _stopping: bool = False

    # -- what the test reads ------------------------------------------------------------
    @property
    def charge_count(self) -> int:
        """Distinct charges the processor made (what the buyer pays for)."""
        with self._lock:
            return len(self._charges)

    @property
    def charges(self) -> list[Charge]:
        with self._lock:
            return list(self._charges.values())

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every correctly signed charge request received, in order (retries included)."""
        with self._lock:
            return list(self._requests)

    @property
    def bad_signatures(self) -> int:
        with self._lock:
            return self._bad_signatures

    @property
    def mismatches(self) -> int:
        """Requests that reused an idempotency key with other parameters (a processor error)."""
        with self._lock:
            return self._mismatches

    def set_mode(self, mode: Mode, *, hold: bool = False) -> None:
        with self._lock:
            self.mode = mode
            self.hold = hold
        self.received.clear()
        self.release.clear()

    # -- the endpoint -------------------------------------------------------------------
    async def _wait_release(self, limit_s: float) -> None:
        deadline = time.monotonic() + limit_s
        while not self.release.is_set() and not self._stopping and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    def _charge(self, payload: dict[str, Any]) -> Charge | None:
        """The processor: one charge per idempotency key; the same key answers the same charge."""
        key = payload["idempotency_key"]
        amount = payload["amount"]
        with self._lock:
            existing = self._charges.get(key)
            if existing is not None:
                same = (
                    existing.order_id == payload["order_id"]
                    and existing.product_id == payload["product_id"]
                    and existing.amount == amount["amount"]
                    and existing.currency == amount["currency"]
                )
                if not same:
                    self._mismatches += 1
                    return None
                return existing
            charge = Charge(
                charge_id=f"ch_{next(self._ids):06d}",
                idempotency_key=key,
                order_id=payload["order_id"],
                product_id=payload["product_id"],
                quantity=payload["quantity"],
                amount=amount["amount"],
                currency=amount["currency"],
                offer_id=payload["offer_id"],
            )
            self._charges[key] = charge
            return charge

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        header = request.headers.get("x-offer-signature", "")
        with self._lock:
            secrets = list(self.secrets)
        if not verify_signature(header, body, secrets, time.time()):
            with self._lock:
                self._bad_signatures += 1
            return Response(b'{"error": "bad signature"}', 401, media_type="application/json")
        try:
            payload = orjson.loads(body)
            assert isinstance(payload["idempotency_key"], str) and payload["idempotency_key"]
            assert isinstance(payload["amount"]["amount"], int)
            assert isinstance(payload["amount"]["currency"], str)
            assert isinstance(payload["quantity"], int)
            for name in ("order_id", "product_id", "offer_id"):
                assert isinstance(payload[name], str)
        except (orjson.JSONDecodeError, KeyError, TypeError, AssertionError):
            return Response(b'{"error": "bad request"}', 400, media_type="application/json")
        with self._lock:
            self._requests.append(payload)
            mode, hold = self.mode, self.hold
        self.received.set()
        if mode == "decline":
            return Response(b'{"error": "card_declined"}', 402, media_type="application/json")
        if mode == "error":
            return Response(b'{"error": "processor down"}', 500, media_type="application/json")
        if mode == "hang":
            # The processor charged, but the answer never comes back in time.
            self._charge(payload)
            await self._wait_release(self.hang_s)
            return Response(b'{"error": "too late"}', 504, media_type="application/json")
        if hold:
            await self._wait_release(60)
        elif self.delay_s:
            await asyncio.sleep(self.delay_s)
        charge = self._charge(payload)
        if charge is None:
            return Response(
                b'{"error": "idempotency key reused with other parameters"}',
                409,
                media_type="application/json",
            )
        return Response(
            orjson.dumps({"charge_id": charge.charge_id, "status": "succeeded"}),
            200,
            media_type="application/json",
        )


def start_charge_double(
    secrets: list[str],
) -> tuple[ChargeDouble, uvicorn.Server, threading.Thread]:
    double = ChargeDouble(secrets=list(secrets))
    app = Starlette(routes=[Route("/charge", double.endpoint, methods=["POST"])])
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the charge double did not start")
        time.sleep(0.02)
    double.url = f"http://127.0.0.1:{port}/charge"
    return double, server, thread


def stop_charge_double(
    double: ChargeDouble, server: uvicorn.Server, thread: threading.Thread
) -> None:
    double._stopping = True
    double.release.set()
    server.should_exit = True
    thread.join(timeout=10)


def running_charge_double(secrets: list[str]) -> Iterator[ChargeDouble]:
    """For a fixture: `yield from running_charge_double([...])`."""
    double, server, thread = start_charge_double(secrets)
    try:
        yield double
    finally:
        stop_charge_double(double, server, thread)
