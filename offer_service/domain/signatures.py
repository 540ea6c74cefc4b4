"""`X-Offer-Signature`: the outbound charge scheme (`v1`) and the inbound admin scheme (`v2`).

Outbound, the service signs what it POSTs to a store's charge endpoint:
`t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`. Inbound, a merchant signs an admin write:
`t=<unix>,v2=<hex HMAC-SHA256 of "<t>.<METHOD>.<target>.<body>">`, where the target is the
request's path and query string exactly as sent. The scheme names the direction: the inbound
verifier reads only `v2`, so a captured charge call never authenticates an admin request, and an
inbound signature made for one method or route never verifies for another. Several secrets may
be valid at once so a merchant can rotate without downtime.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Sequence
from secrets import token_urlsafe

from offer_service.types import is_whole

TOLERANCE_S = 300
OUTBOUND = "v1"
INBOUND = "v2"


def new_webhook_secret() -> str:
    return "whsec_" + token_urlsafe(24)


def _mac(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The outbound (charge call) signature of `body`."""
    return f"t={timestamp},{OUTBOUND}={_mac(secret, str(timestamp).encode() + b'.' + body)}"


def inbound_message(timestamp: int, method: str, target: str, body: bytes) -> bytes:
    """What an inbound signature covers: time, method, path and query as sent, and body."""
    return f"{timestamp}.{method.upper()}.{target}.".encode() + body


def inbound_signature(secret: str, method: str, target: str, body: bytes, timestamp: int) -> str:
    """The inbound (admin write) signature of a request: see `inbound_message`."""
    mac = _mac(secret, inbound_message(timestamp, method, target, body))
    return f"t={timestamp},{INBOUND}={mac}"


def verify(
    header: str, body: bytes, secrets: Sequence[str], now_s: float, tolerance_s: int = TOLERANCE_S
) -> bool:
    """True when `header` is an outbound signature of `body` with one of `secrets` within the
    tolerance, both ways."""
    return _verify(
        header, OUTBOUND, lambda t: (str(t).encode() + b"." + body,), secrets, now_s, tolerance_s
    )


def verify_inbound(
    header: str,
    method: str,
    target: str,
    body: bytes,
    secrets: Sequence[str],
    now_s: float,
    tolerance_s: int = TOLERANCE_S,
) -> bool:
    """True when `header` is an inbound signature of this method, target and body with one of
    `secrets` within the tolerance, both ways. Outbound (`v1`) signatures never pass."""
    return verify_inbound_parts(
        header, method, target, lambda: (body,), secrets, now_s, tolerance_s
    )


def verify_inbound_parts(
    header: str,
    method: str,
    target: str,
    body: Callable[[], Iterable[bytes]],
    secrets: Sequence[str],
    now_s: float,
    tolerance_s: int = TOLERANCE_S,
) -> bool:
    """`verify_inbound` of a body given as its parts in order (a file read a chunk at a time),
    read once and only when the header's time is within the tolerance."""

    def message(timestamp: int) -> Iterable[bytes]:
        yield inbound_message(timestamp, method, target, b"")
        yield from body()

    return _verify(header, INBOUND, message, secrets, now_s, tolerance_s)


def _verify(
    header: str,
    scheme: str,
    message: Callable[[int], Iterable[bytes]],
    secrets: Sequence[str],
    now_s: float,
    tolerance_s: int,
) -> bool:
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and is_whole(value) and len(value) <= 12:
            timestamp = int(value)
        elif name == scheme:
            candidates.append(value)
    if timestamp is None or not candidates or abs(now_s - timestamp) > tolerance_s:
        return False
    # Every secret is tried, over one reading of the message: which one matched must not show
    # in the time.
    macs = [hmac.new(secret.encode(), digestmod=hashlib.sha256) for secret in secrets]
    for chunk in message(timestamp):
        for mac in macs:
            mac.update(chunk)
    ok = False
    for mac in macs:
        expected = mac.hexdigest()
        for given in candidates:
            ok |= hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))
    return ok
