"""The merchant's charge endpoint as a real HTTP server: a double of a store's payment backend."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import itertools
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
import uvicorn
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

Mode = Literal["ok", "decline", "error", "hang"]
MODES: tuple[Mode, ...] = ("ok", "decline", "error", "hang")

# The service signs with its own clock: tolerate the skew it tolerates on webhooks
# (docs/security.md).
SIGNATURE_TOLERANCE_S = 300
BODY_LIMIT = 64 * 1024
# The service keeps a pool of connections to the charge endpoint; closing idle ones sooner
# than it expects only makes it reconnect.
KEEP_ALIVE_S = 75


def signature_ok(header: str, body: bytes, secrets: Sequence[str], now_s: float) -> bool:
    """`t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">` (docs/api.md), in constant time.

    Written apart from the service's signer, as a merchant would write it, so that a fault in
    the service's signature shows up here rather than being verified by its own mirror image.
    """
    try:
        parts = dict(p.strip().split("=", 1) for p in header.split(","))
        stamp, given = parts["t"], parts["v1"].encode()
    except (KeyError, ValueError):
        return False
    # At most 12 digits: int() refuses a few thousand, and no timestamp needs more.
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
        return False
    if abs(now_s - int(stamp)) > SIGNATURE_TOLERANCE_S:
        return False
    ok = False
    for secret in secrets:  # every secret is tried: which one matched must not show in the time
        mac = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256)
        ok |= hmac.compare_digest(mac.hexdigest().encode(), given)
    return ok


class Amount(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True)

    amount: int
    currency: str


class ChargeRequest(BaseModel):
    """The body the service POSTs (docs/api.md "The store's charge endpoint")."""

    model_config = ConfigDict(frozen=True, strict=True)

    order_id: Annotated[str, Field(min_length=1)]
    product_id: Annotated[str, Field(min_length=1)]
    quantity: Annotated[int, Field(ge=1)]
    amount: Amount
    offer_id: str = ""
    idempotency_key: Annotated[str, Field(min_length=1)]


@dataclass(frozen=True, slots=True)
class Refusal:
    """An answer other than a charge: its status, and the error body's code and message."""

    status: int
    code: str
    message: str

    def response(self) -> Response:
        body = {"error": {"code": self.code, "message": self.message, "details": []}}
        return Response(orjson.dumps(body), self.status, media_type="application/json")


BAD_SIGNATURE = Refusal(401, "bad_signature", "The X-Offer-Signature header is invalid.")
INVALID = Refusal(422, "invalid_charge", "The charge request is malformed.")
DECLINED = Refusal(402, "card_declined", "The card on file was declined.")
PROCESSOR_DOWN = Refusal(500, "processor_error", "The payment processor is unavailable.")
TOO_LATE = Refusal(504, "too_late", "The payment processor answered too late.")
KEY_REUSED = Refusal(
    409, "idempotency_key_reused", "This idempotency key was used with other parameters."
)

# A hook that looks at each valid request before it is charged (the demo store declines the
# orders of one customer, and knows which orders exist): a Refusal to answer instead, or None.
Decide = Callable[[ChargeRequest], Awaitable[Refusal | None]]


@dataclass(frozen=True, slots=True)
class Charge:
    """One charge the processor made: what the buyer pays for."""

    charge_id: str
    idempotency_key: str
    order_id: str
    product_id: str
    quantity: int
    amount: int
    currency: str
    offer_id: str
    at_ms: int

    def as_json(self) -> dict[str, Any]:
        """The charge as a merchant's log lists it, money as the API writes it."""
        return {
            "charge_id": self.charge_id,
            "idempotency_key": self.idempotency_key,
            "order_id": self.order_id,
            "product_id": self.product_id,
            "quantity": self.quantity,
            "amount": {"amount": self.amount, "currency": self.currency},
            "offer_id": self.offer_id,
            "at": datetime.fromtimestamp(self.at_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


@dataclass
class ChargeDouble:
    """A store's charge endpoint charging through a processor that de-duplicates by the body's
    `idempotency_key`: the same key answers the same `charge_id` and is charged once.

    It verifies `X-Offer-Signature` with `secrets` (None: not signed-checked, for a store whose
    secret is unknown) and answers by `mode`: "ok" charges, "decline" is a 402, "error" a 500,
    "hang" charges but answers only after `hang_s` (past the service's timeout) or `release`.
    `answer_next` scripts the next answers; `hold` makes "ok" wait for `release` (signalling
    `received` first) and `delay_s` makes it slow. The state is shared between the server's
    thread and the caller: read it through the properties.
    """

    secrets: list[str] | None = None
    mode: Mode = "ok"
    hold: bool = False
    hang_s: float = 30.0
    delay_s: float = 0.0
    id_prefix: str = "ch_"
    decide: Decide | None = None
    url: str = ""
    received: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _script: deque[Mode] = field(default_factory=deque)
    _requests: list[dict[str, Any]] = field(default_factory=list)
    _charges: dict[str, Charge] = field(default_factory=dict)
    _bad_signatures: int = 0
    _declined: int = 0
    _mismatches: int = 0
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _stopping: bool = False

    # -- what the caller reads ------------------------------------------------------------
    @property
    def charge_count(self) -> int:
        """Distinct charges the processor made."""
        with self._lock:
            return len(self._charges)

    @property
    def charges(self) -> list[Charge]:
        with self._lock:
            return list(self._charges.values())

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every correctly signed, well-formed charge request, in order (retries included)."""
        with self._lock:
            return list(self._requests)

    @property
    def bad_signatures(self) -> int:
        with self._lock:
            return self._bad_signatures

    @property
    def declined(self) -> int:
        """Requests answered 402."""
        with self._lock:
            return self._declined

    @property
    def mismatches(self) -> int:
        """Requests that reused an idempotency key with other parameters (a processor error)."""
        with self._lock:
            return self._mismatches

    # -- what the caller sets -------------------------------------------------------------
    def set_mode(self, mode: Mode, *, hold: bool = False) -> None:
        """Answer every request from now on by `mode`; clears `received` and `release`."""
        with self._lock:
            self.mode = mode
            self.hold = hold
            self._script.clear()
        self.received.clear()
        self.release.clear()

    def answer_next(self, *modes: Mode) -> None:
        """Answer the next requests by these modes, in order; then by `mode` again."""
        with self._lock:
            self._script.extend(modes)

    # -- the endpoint ---------------------------------------------------------------------
    def app(self) -> Starlette:
        """The endpoint as an ASGI app: POST /charge."""
        return Starlette(routes=[Route("/charge", self.endpoint, methods=["POST"])])

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        if len(body) > BODY_LIMIT:
            return INVALID.response()
        return await self.respond(body, request.headers.get("x-offer-signature", ""))

    async def respond(
        self,
        body: bytes,
        signature: str,
        *,
        secrets: Sequence[str] | None = None,
        decide: Decide | None = None,
    ) -> Response:
        """The answer to one charge request. `secrets` and `decide` override the double's own,
        for a server that mounts it on a route of its own and knows the store per request."""
        if secrets is None and self.secrets is not None:
            with self._lock:
                secrets = list(self.secrets)
        if secrets is not None and not signature_ok(signature, body, secrets, time.time()):
            with self._lock:
                self._bad_signatures += 1
            return BAD_SIGNATURE.response()
        try:
            charge_request = ChargeRequest.model_validate_json(body)
        except ValidationError:
            return INVALID.response()
        with self._lock:
            self._requests.append(charge_request.model_dump())
            mode, hold = (self._script.popleft() if self._script else self.mode), self.hold
            known = self._charges.get(charge_request.idempotency_key)
        self.received.set()
        refusal = {"decline": DECLINED, "error": PROCESSOR_DOWN}.get(mode)
        decide = decide or self.decide
        if refusal is None and known is None and decide is not None:
            refusal = await decide(charge_request)
        if refusal is not None:
            if refusal.status == 402:
                with self._lock:
                    self._declined += 1
            return refusal.response()
        if mode == "hang":
            # The processor charged, but its answer never comes back in time.
            self._charge(charge_request)
            await self._wait_release(self.hang_s)
            return TOO_LATE.response()
        if hold:
            await self._wait_release(60)
        elif self.delay_s:
            await asyncio.sleep(self.delay_s)
        charge = self._charge(charge_request)
        if charge is None:
            return KEY_REUSED.response()
        return Response(
            orjson.dumps({"charge_id": charge.charge_id, "status": "succeeded"}),
            media_type="application/json",
        )

    def _charge(self, req: ChargeRequest) -> Charge | None:
        """The processor: one charge per idempotency key; the same key answers the same charge,
        and a key reused with another order, product or amount is refused."""
        with self._lock:
            existing = self._charges.get(req.idempotency_key)
            if existing is not None:
                same = (existing.order_id, existing.product_id, existing.amount, existing.currency)
                if same != (req.order_id, req.product_id, req.amount.amount, req.amount.currency):
                    self._mismatches += 1
                    return None
                return existing
            charge = Charge(
                charge_id=f"{self.id_prefix}{next(self._ids):06d}",
                idempotency_key=req.idempotency_key,
                order_id=req.order_id,
                product_id=req.product_id,
                quantity=req.quantity,
                amount=req.amount.amount,
                currency=req.amount.currency,
                offer_id=req.offer_id,
                at_ms=time.time_ns() // 1_000_000,
            )
            self._charges[req.idempotency_key] = charge
            return charge

    async def _wait_release(self, limit_s: float) -> None:
        deadline = time.monotonic() + limit_s
        while not self.release.is_set() and not self._stopping and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    def stopping(self) -> None:
        """Let every held or hanging answer go: the server is shutting down."""
        self._stopping = True
        self.release.set()


def _config(double: ChargeDouble, host: str = "127.0.0.1", port: int = 0) -> uvicorn.Config:
    return uvicorn.Config(
        double.app(),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=2,
    )


class ServerThread:
    """A charge double served by uvicorn in a daemon thread, on a port of its own."""

    def __init__(self, double: ChargeDouble, host: str = "127.0.0.1", port: int = 0) -> None:
        self.double = double
        # Bound here, before the thread starts: the port is known and cannot be taken meanwhile.
        self._socket = socket.create_server((host, port))
        bound_port = self._socket.getsockname()[1]
        double.url = f"http://{host}:{bound_port}/charge"
        self._server = uvicorn.Server(_config(double, host, bound_port))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def start(self, timeout_s: float = 20.0) -> ChargeDouble:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the charge double did not start")
            time.sleep(0.01)
        return self.double

    def stop(self) -> None:
        self.double.stopping()
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()


@contextmanager
def serving(double: ChargeDouble, host: str = "127.0.0.1", port: int = 0) -> Iterator[ChargeDouble]:
    """The double listening at `double.url` for the length of the block."""
    server = ServerThread(double, host, port)
    server.start()
    try:
        yield double
    finally:
        server.stop()


def running_charge_double(secrets: Sequence[str]) -> Iterator[ChargeDouble]:
    """For a pytest fixture: `yield from running_charge_double([webhook_secret])`."""
    with serving(ChargeDouble(secrets=list(secrets))) as double:
        yield double


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a charge double in the foreground (the load tests run it as a process of its own)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument(
        "--webhook-secret",
        action="append",
        default=[],
        help="verify X-Offer-Signature with it (repeatable; without one, nothing is verified)",
    )
    parser.add_argument("--mode", choices=MODES, default="ok", help="how every charge is answered")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each charge")
    args = parser.parse_args(argv)
    double = ChargeDouble(
        secrets=args.webhook_secret or None, mode=args.mode, delay_s=args.delay, id_prefix="ch_lt_"
    )
    print(f"charge endpoint: http://{args.host}:{args.port}/charge", file=sys.stderr, flush=True)
    uvicorn.Server(_config(double, args.host, args.port)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
